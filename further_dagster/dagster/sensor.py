"""The release sensor: re-materialize exactly what a changed release reaches.

Every tick observes each resource instance (get_release(), recorded in the store's history and,
when it changed, reported to Dagster as an observation with the new data version), resolves the
releases the cells' freshness policies choose, and compares them with the sensor's cursor. For a
release that changed, it requests the downstream instances that release reaches whose logic keys
are not stored, and records a cache-hit materialization of each reached asset/partition that is
stored and rests only on stored results (see `_report_hits`), so Dagster shows them fresh at the
release they now rest on at once: a release that reaches only stored results (a flip back to an
older release) requests no run at all, and one that reaches some stored instances (a notebook
computed them already) requests a run of the others only. An unchanged re-observation requests
nothing. A release the sensor sees for the first time (a new deployment, a reset cursor) counts
as a change: when everything it reaches is already stored, that too requests nothing (and
records the hits Dagster has not recorded yet).

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
from further_dagster.dagster.sqlite_events import event_batch, install_sqlite_engine_cache
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
    # stored instances whose reached dependencies are all stored too: told now as cache hits
    # (the others are recorded by the run that computes what they rest on)
    waiting = {i.skey for i in todo}
    stored = []
    for inst in reached:  # dependencies first
        if inst.skey in waiting or any(d.skey in waiting for d in inst.dep_instances()):
            waiting.add(inst.skey)
        else:
            stored.append(inst)
    if instance is not None:
        install_sqlite_engine_cache()
    with event_batch(instance):  # the hits in one commit (SQLite); each reads the ones before
        hits = _report_hits(location, store, actual, stored, instance)
    if log is not None and hits:
        log.info(
            f"{len(hits)} instance(s) the new release(s) reach are stored: reported as cache "
            "hit(s): " + ", ".join(k.to_user_string() + (f"[{pk}]" if pk else "") for k, pk in hits)
        )
    if not todo:
        return dg.SensorResult(
            skip_reason=f"release changed ({_short(labels)}) but every instance it reaches is "
            f"stored ({len(hits)} cache hit(s) reported)",
            cursor=new_cursor,
            asset_events=events,
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


def _pointer(instance: Any, key: dg.AssetKey, source: bool) -> str:
    """The input event pointer to `key` now: the storage id of its latest record (of any
    partition), so that Dagster sees a dependency partition recorded after it as changed."""
    record = instance.get_latest_data_version_record(key, source)
    return str(record.storage_id) if record is not None else _compat.NULL_EVENT_POINTER


def _report_hits(
    location: Location,
    store: Store,
    actual: Mapping[str, Instance],
    stored: list[Instance],
    instance: Any,
) -> list[tuple[dg.AssetKey, str | None]]:
    """Record a cache-hit materialization for each of these stored instances (dependencies
    first) that Dagster does not show at its logic key, with the version tags a run would write;
    returns the (asset key, partition) of each.

    They are written to the instance here, one after the other, rather than returned with the
    tick's events: an input event pointer is a storage id, and a dependency partition's hit
    gets one only once it is recorded. So a dependent's pointer is the real record of what it
    rests on (also when that result was stored by a Session and never recorded in Dagster), and
    a later change of that partition shows through it as stale. A resource input carries the
    data version of the release this tick chose (its observation is among the tick's events).
    Without an instance (a bare sensor context) there is nothing to tell and nothing is
    written."""
    if instance is None:
        return []
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
    hits: list[tuple[dg.AssetKey, str | None]] = []
    for inst in stored:
        if inst.skey not in where:
            continue  # not an asset of this code location
        key, pk, _ = where[inst.skey]
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
            inputs[_compat.get_input_event_pointer_tag(dkey)] = _pointer(
                instance, dkey, dkey in resource_deps
            )
        instance.report_runless_asset_event(
            dg.AssetMaterialization(
                asset_key=key,
                partition=pk,
                description="cache hit: the release switched to a stored result",
                metadata=instance_metadata(
                    store.root, inst, True, 0.0, getattr(store, "index_url", None)
                ),
                tags=version_tags(inst, inputs),
            )
        )
        hits.append((key, pk))
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
