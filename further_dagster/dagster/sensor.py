"""The release sensor: re-materialize exactly what a changed release reaches.

Every tick observes each resource instance (get_release(), recorded in the store's history and,
when it changed, reported to Dagster as an observation with the new data version), resolves the
releases the cells' freshness policies choose, and compares them with the sensor's cursor. For a
release that changed, it requests the downstream instances that release reaches whose logic keys
are not stored — a release that reaches only stored results (a flip back to an older release)
requests no run but reports a cache-hit materialization of each reached asset/partition (see
`_cache_hits`), so Dagster shows them fresh at the release they now rest on — and an unchanged
re-observation requests nothing at all. A release the sensor sees for the first time (a new
deployment, a reset cursor) counts as a change: when everything it reaches is already stored,
that too requests nothing (and reports the hits Dagster has not recorded yet).

Requests: one run over the affected assets; when partitioned assets are affected, the run covers
their partitions (one partition key, or a partition range tagged with the exact keys); when
affected assets use several partitions definitions, one backfill of exactly the affected
(asset, partition) pairs. The sensor ships with `default_status=RUNNING`, so it runs whenever the
daemon does.
"""

import json
import logging
from collections.abc import Mapping
from typing import Any

import dagster as dg

from further_dagster.core.hashing import digest
from further_dagster.core.instances import Instance
from further_dagster.dagster import _compat
from further_dagster.dagster import tags as T
from further_dagster.dagster.assets import instance_metadata
from further_dagster.dagster.location import Location, asset_key_for
from further_dagster.dagster.resource_assets import (
    data_version_of,
    observation_metadata,
    release_labels,
)
from further_dagster.dagster.versions import version_tags
from further_dagster.engine.plan import missing
from further_dagster.engine.releases import Clock
from further_dagster.store import Store

log = logging.getLogger("further")

SENSOR_NAME = "further_release_sensor"
MAX_TAG_CHARS = 4000


def downstream_targets(location: Location) -> list[dg.AssetKey]:
    """Cell assets with a resource cell upstream (transitively): what the sensor may request."""
    graph = location.graph
    reached: set[Any] = set()
    for cell in graph.order:  # dependencies first
        ups = set(graph.targets[cell].values())
        if any(u.is_resource or u in reached for u in ups):
            reached.add(cell)
    assets = location.projection.assets
    return [asset_key_for(c) for c in graph.order if c in reached and c in assets]


def _reached(actual: Mapping[str, Instance], changed: set[str]) -> list[Instance]:
    """Instances (dependencies first) that rest on a changed resource instance."""
    hit = set(changed)
    out: list[Instance] = []
    for skey, inst in actual.items():
        if skey in hit:
            continue
        if any(d.skey in hit for d in inst.dep_instances()):
            hit.add(skey)
            out.append(inst)
    return out


def _labels_by_skey(location: Location) -> dict[str, str]:
    """Structural key -> the readable name of each resource instance ("project.cell", plus its
    Specs when the cell has several instances): the sensor's cursor and logs use these."""
    out: dict[str, str] = {}
    for cell, asset in location.projection.assets.items():
        if cell.is_resource:
            insts = asset.instances[None]
            names = release_labels(insts, {i.skey: "" for i in insts})
            for inst, label in zip(insts, names, strict=True):
                out[inst.skey] = label
    return out


def _previously_seen(location: Location, instance: Any) -> dict[str, str]:
    """What Dagster last recorded for each resource instance (the `further/releases` metadata
    of its latest observation), so a first tick after start-up reports no change when there is
    none."""
    if instance is None:
        return {}
    seen: dict[str, str] = {}
    for cell in location.projection.assets:
        if not cell.is_resource:
            continue
        records = instance.fetch_observations(asset_key_for(cell), limit=1).records
        if not records:
            continue
        meta = records[0].asset_observation.metadata.get(T.RELEASES)
        value = getattr(meta, "value", None)
        if isinstance(value, dict):
            seen.update({str(k): str(v) for k, v in value.items()})
    return seen


def evaluate_releases(
    location: Location,
    cursor: str | None,
    *,
    asset_graph: Any = None,
    clock: Clock | None = None,
    instance: Any = None,
    log: Any = None,
) -> dg.SensorResult:
    """One tick of the release sensor (pure Dagster values in, a SensorResult out).

    Each resource instance is resolved by its own freshness policy (the code location's
    overrides applied): `latest()` asks get_release() every tick, `current(s)` at most once per
    shelf life, `present()` / `release(pin)` / `date_range(...)` choose among stored releases and
    so never start a run by themselves. The cursor is keyed by instance name (see
    `_labels_by_skey`); an empty cursor starts from what Dagster last observed.
    """
    store = location.store()
    names = _labels_by_skey(location)
    previous = json.loads(cursor) if cursor else {}
    prev_chosen: dict[str, str] = previous.get("releases") or _previously_seen(location, instance)
    prev_observed: dict[str, str] = previous.get("observed", {})
    resolver = location.release_resolver(source="sensor", clock=clock)
    actual = location.actual_instances(resolver=resolver)
    resources = [i for i in actual.values() if i.cell.is_resource]
    chosen = {names.get(i.skey, i.skey): i.release or "" for i in resources}
    observed = {names.get(k, k): v for k, v in resolver.observed.items()}
    new_cursor = json.dumps({"releases": chosen, "observed": observed}, sort_keys=True)
    events = _observations(location, store, resources, resolver.observed, prev_observed, names)
    changed_names = {n for n, rel in chosen.items() if prev_chosen.get(n) != rel}
    for name, rel in sorted(chosen.items()):
        before = prev_chosen.get(name)
        how = (
            "unchanged"
            if before == rel
            else (f"changed from {before}" if before is not None else "first seen")
        )
        asked = "observed" if name in observed else "chosen by its policy, not observed"
        if log is not None:
            log.info(f"{name}: release {rel} ({how}; {asked})")
    changed = {i.skey for i in resources if names.get(i.skey, i.skey) in changed_names}
    if not changed:
        return dg.SensorResult(
            skip_reason="no release changed", cursor=new_cursor, asset_events=events
        )
    reached = [i for i in _reached(actual, changed) if not i.cell.is_resource]
    in_reach = {i.key for i in reached}
    todo = [i for i in missing(store, reached) if i.key in in_reach]
    labels = {i.label: i.release or "" for i in resources if i.skey in changed}
    if not todo:
        hits = _cache_hits(location, store, actual, reached, instance)
        if log is not None and hits:
            log.info(
                f"every instance the new release(s) reach is stored: reporting {len(hits)} "
                "cache hit(s): "
                + ", ".join(
                    h.asset_key.to_user_string() + (f"[{h.partition}]" if h.partition else "")
                    for h in hits
                )
            )
        return dg.SensorResult(
            skip_reason=f"release changed ({_short(labels)}) but every instance it reaches is "
            f"stored ({len(hits)} cache hit(s) reported)",
            cursor=new_cursor,
            asset_events=[*events, *hits],
        )
    request = _request(location, todo, labels, previous, asset_graph)
    if log is not None:
        log.info(
            f"requesting {len(todo)} instance(s) the new release(s) reach: "
            + ", ".join(i.label for i in todo)
        )
    return dg.SensorResult(run_requests=[request], cursor=new_cursor, asset_events=events)


def _short(labels: Mapping[str, str]) -> str:
    text = ", ".join(f"{k}={v}" for k, v in labels.items())
    return text if len(text) < 300 else text[:297] + "..."


def _observations(
    location: Location,
    store: Store,
    resources: list[Instance],
    observed: Mapping[str, str],
    prev_observed: Mapping[str, str],
    names: Mapping[str, str],
) -> list[dg.AssetObservation]:
    """An observation (with the data version) for each resource asset whose release changed
    (`observed` by structural key, `prev_observed` by instance name)."""
    events = []
    for cell, asset in location.projection.assets.items():
        if not cell.is_resource:
            continue
        skeys = [i.skey for i in asset.instances[None]]
        if not any(s in observed for s in skeys):
            continue
        if all(observed.get(s) == prev_observed.get(names.get(s, s)) for s in skeys):
            continue
        releases = {s: observed[s] for s in skeys if s in observed}
        events.append(
            dg.AssetObservation(
                asset_key=asset_key_for(cell),
                metadata=observation_metadata(store, asset, releases),
                tags={_compat.DATA_VERSION_TAG: data_version_of(releases)},
            )
        )
    return events


def _where(location: Location) -> dict[str, tuple[dg.AssetKey, str | None, str | None]]:
    """Structural key -> (asset key, partition key, partitions definition name)."""
    where: dict[str, tuple[dg.AssetKey, str | None, str | None]] = {}
    for cell, asset in location.projection.assets.items():
        name = asset.partitions.name if asset.partitions is not None else None
        for pk, insts in asset.instances.items():
            for i in insts:
                where[i.skey] = (asset_key_for(cell), pk, name)
    return where


def _version_of(record: Any) -> str | None:
    version = _compat.extract_data_version_from_entry(record.event_log_entry)
    return version.value if version is not None else None


HIT_LOOKBACK = 25  # materializations of one partition searched for an earlier equal version


def _equal_version_record(instance: Any, key: dg.AssetKey, pk: str, version: str) -> int | None:
    """The storage id of the latest materialization of (key, pk) with data version `version`."""
    found = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[pk]), limit=HIT_LOOKBACK
    ).records
    for record in found:  # newest first
        if _version_of(record) == version:
            return int(record.storage_id)
    return None


def _partition_pointer(
    instance: Any, key: dg.AssetKey, versions: Mapping[str, str], planned: set[str]
) -> str:
    """An input event pointer for a partitioned dependency, valid once this tick's events are
    recorded. Dagster decides a partition dependency changed when its latest record after the
    pointer differs in data version from its latest record at or before the pointer; our own
    events get their storage ids only after the tick, so the pointer is the newest earlier
    record carrying the version each partition has now, checked to be what Dagster finds at or
    before it for every partition. When no such pointer exists (a result stored by a Session,
    never recorded in Dagster at that version) the null pointer is used: Dagster then compares
    latest with latest, which is fresh (and stays so until the next run records real inputs)."""
    if instance is None:
        return _compat.NULL_EVENT_POINTER
    ids: list[int] = []
    for pk, version in versions.items():
        found = _equal_version_record(instance, key, pk, version)
        if found is None:
            return _compat.NULL_EVENT_POINTER
        ids.append(found)
    cursor = max(ids)
    for pk, version in versions.items():
        record = instance.get_latest_data_version_record(key, False, pk, before_cursor=cursor + 1)
        if record is None or _version_of(record) != version:
            return _compat.NULL_EVENT_POINTER
        if pk not in planned:  # no hit reported now: the latest record must carry it already
            latest = instance.get_latest_data_version_record(key, False, pk)
            if latest is None or _version_of(latest) != version:
                return _compat.NULL_EVENT_POINTER
    return str(cursor)


def _cache_hits(
    location: Location,
    store: Store,
    actual: Mapping[str, Instance],
    reached: list[Instance],
    instance: Any,
) -> list[dg.AssetMaterialization]:
    """Cache-hit materializations for the reached instances (all stored) that Dagster has not
    recorded at their logic key, dependencies first, with the version tags a run would write.

    The input tags come from what this tick knows, not from Dagster's records (this tick's own
    events are recorded after it): a resource input has the data version of the releases now
    chosen (the observation reported in the same result), a cell input its logic key."""
    where = _where(location)
    resource_versions: dict[dg.AssetKey, str] = {}
    for cell, asset in location.projection.assets.items():
        if cell.is_resource:
            rel = {
                i.skey: actual[i.skey].release or ""
                for i in asset.instances[None]
                if i.skey in actual
            }
            if rel:
                resource_versions[asset_key_for(cell)] = data_version_of(rel)
    hits: list[dg.AssetMaterialization] = []
    planned: dict[dg.AssetKey, set[str]] = {}
    for inst in reached:
        if inst.skey not in where:
            continue  # not an asset of this code location
        key, pk, _ = where[inst.skey]
        if instance is not None:
            record = instance.get_latest_data_version_record(key, False, pk)
            if record is not None and _version_of(record) == inst.key:
                continue  # Dagster already shows this instance at its logic key
        deps: dict[dg.AssetKey, dict[str | None, str]] = {}
        resource_deps: set[dg.AssetKey] = set()
        for dep in inst.dep_instances():
            if dep.skey not in where:
                continue
            dkey, dpk, _ = where[dep.skey]
            if dep.cell.is_resource:
                resource_deps.add(dkey)
                deps.setdefault(dkey, {})[None] = resource_versions.get(dkey, dep.release or "")
            else:
                deps.setdefault(dkey, {})[dpk] = dep.key
        inputs: dict[str, str] = {}
        for dkey, versions in sorted(deps.items(), key=lambda kv: kv[0].to_user_string()):
            if len(versions) == 1:
                value = next(iter(versions.values()))
            else:
                value = "partitions:" + digest({str(p): v for p, v in versions.items()})[:16]
            inputs[_compat.get_input_data_version_tag(dkey)] = value
            if None in versions or dkey in resource_deps:
                record = (
                    instance.get_latest_data_version_record(dkey, dkey in resource_deps)
                    if instance is not None
                    else None
                )
                pointer = (
                    str(record.storage_id) if record is not None else _compat.NULL_EVENT_POINTER
                )
            else:
                by_pk = {str(p): v for p, v in versions.items()}
                pointer = _partition_pointer(instance, dkey, by_pk, planned.get(dkey, set()))
            inputs[_compat.get_input_event_pointer_tag(dkey)] = pointer
        hits.append(
            dg.AssetMaterialization(
                asset_key=key,
                partition=pk,
                description="cache hit: the release switched to a stored result",
                metadata=instance_metadata(store.root, inst, True, 0.0),
                tags=version_tags(inst, inputs),
            )
        )
        if pk is not None:
            planned.setdefault(key, set()).add(pk)
    return hits


def _request(
    location: Location,
    todo: list[Instance],
    labels: Mapping[str, str],
    previous: Mapping[str, Any],
    asset_graph: Any,
) -> dg.RunRequest:
    where = _where(location)
    pairs = sorted({where[i.skey][:2] for i in todo}, key=lambda p: (p[0].path, p[1] or ""))
    order = {asset_key_for(c): n for n, c in enumerate(location.graph.order)}
    selection = sorted({k for k, _ in pairs}, key=lambda k: order[k])
    sets: dict[str, set[str]] = {}
    for i in todo:
        _, pk, name = where[i.skey]
        if name is not None and pk is not None:
            sets.setdefault(name, set()).add(pk)
    tags = {
        T.TRIGGER_TAG: SENSOR_NAME,
        T.RELEASES_TAG: json.dumps(labels, sort_keys=True)[:MAX_TAG_CHARS],
    }
    run_key = (
        "releases-"
        + digest(
            {
                "pairs": [[k.to_user_string(), pk or ""] for k, pk in pairs],
                "releases": dict(labels),
                "previous": dict(previous.get("releases", {})),
            }
        )[:20]
    )
    if len(sets) > 1:
        if asset_graph is None:
            raise dg.DagsterInvariantViolationError(
                "the release sensor needs the asset graph to request several partitions "
                "definitions at once"
            )
        return _compat.backfill_request(asset_graph, pairs, tags)
    if not sets:
        return dg.RunRequest(run_key=run_key, asset_selection=selection, tags=tags)
    ((name, keys),) = sets.items()
    all_keys = next(
        a.partitions.keys
        for a in location.projection.assets.values()
        if a.partitions is not None and a.partitions.name == name
    )
    ordered = [k for k in all_keys if k in keys]
    tags[T.PARTITIONS_TAG] = ",".join(ordered)[:MAX_TAG_CHARS]
    if len(ordered) == 1:
        return dg.RunRequest(
            run_key=run_key, asset_selection=selection, partition_key=ordered[0], tags=tags
        )
    tags[T.RANGE_START_TAG], tags[T.RANGE_END_TAG] = ordered[0], ordered[-1]
    return dg.RunRequest(run_key=run_key, asset_selection=selection, tags=tags)


def _instance_of(context: dg.SensorEvaluationContext) -> Any:
    try:
        return context.instance
    except dg.DagsterInvariantViolationError:  # a context built without an instance
        return None


def release_sensor(
    location: Location,
    *,
    name: str = SENSOR_NAME,
    minimum_interval_seconds: int = 30,
    default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.RUNNING,
) -> dg.SensorDefinition:
    """The sensor that observes resource cells and re-materializes what a new release reaches."""
    targets = downstream_targets(location)

    @dg.sensor(
        name=name,
        asset_selection=dg.AssetSelection.assets(*targets),
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=default_status,
        description=(
            "Observes every further_dagster resource cell (get_release()) and, when a release "
            "changes, materializes exactly the downstream instances it reaches that are not "
            "stored yet; when all of them are stored (a switch back to an earlier release) it "
            "reports them as cache hits instead. An unchanged release requests nothing."
        ),
    )
    def _release_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        repo = getattr(context, "repository_def", None)
        return evaluate_releases(
            location,
            context.cursor,
            instance=_instance_of(context),
            log=context.log,
            asset_graph=repo.asset_graph if repo is not None else None,
        )

    return _release_sensor


__all__ = ["SENSOR_NAME", "downstream_targets", "evaluate_releases", "release_sensor"]
