"""`further-dagster materialize`: the stock `dagster asset materialize`, with partitions filled in.

The stock command refuses a selection that holds partitioned assets unless it is given one
partition or a range, and refuses a range over assets with different partitions definitions.
Here every swept cell is covered (all its partitions by default, or `--partition KEY`), with the
same selection syntax (`*`, `group:example`, `+example/report`, `example/fit`, comma-separated),
in as few runs as the partitions allow: the selected assets are walked in dependency order and a
new run starts where a second partitions definition appears (one run holds the unpartitioned
assets and one partitions definition's assets). Each run goes through the code
location's own executor, exactly like the stock command.

Assets whose instances are all stored stay out of the runs (Dagster would write a planned
event for each, then our cache-hit record): one the Dagster instance already shows at its logic
key needs no event at all, one stored elsewhere (a Session) gets a runless cache-hit
materialization with its data version. When nothing is left, no run is created. (Before any of
this, `further-dagster materialize` asks the engine, without importing Dagster, whether the
whole selection is stored: further_dagster/stored_selection.py.)
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TextIO

import dagster as dg

from further_dagster.core.instances import Instance
from further_dagster.dagster import _compat
from further_dagster.dagster import tags as T
from further_dagster.dagster.assets import instance_metadata
from further_dagster.dagster.location import Location, location_of
from further_dagster.dagster.run_config import run_partition_keys
from further_dagster.dagster.sqlite_events import event_batch, install_sqlite_engine_cache
from further_dagster.dagster.versions import input_tags, latest_data_version, version_tags
from further_dagster.errors import FurtherError, SelectionError


@dataclass(frozen=True)
class PlannedRun:
    """One run of the plan: the asset keys, and the partition tags it carries (if any)."""

    keys: tuple[dg.AssetKey, ...]
    tags: dict[str, str]

    def describe(self) -> str:
        names = ", ".join(k.to_user_string() for k in self.keys[:6])
        if len(self.keys) > 6:
            names += f" and {len(self.keys) - 6} more"
        if T.PARTITION_TAG in self.tags:
            return f"{names} [partition {self.tags[T.PARTITION_TAG]}]"
        if T.RANGE_START_TAG in self.tags:
            start, end = self.tags[T.RANGE_START_TAG], self.tags[T.RANGE_END_TAG]
            return f"{names} [partitions {start}...{end}]"
        return names


def plan_runs(
    defs: dg.Definitions, location: Location, select: str, partition: str | None = None
) -> list[PlannedRun]:
    """The runs that materialize `select` (see the module docstring)."""
    graph = defs.resolve_asset_graph()
    try:
        chosen = dg.AssetSelection.from_coercible(select.split(",")).resolve(graph)
    except dg.DagsterError as exc:
        raise SelectionError(
            f"--select {select!r}: {str(exc).rstrip('.')}. Use Dagster's syntax: `*`, "
            "`group:NAME`, `project/cell`, `+project/cell` (with its parents), comma-separated."
        ) from None
    order = [
        k for k in graph.toposorted_asset_keys if k in chosen and graph.get(k).is_materializable
    ]
    if not order:
        raise SelectionError(f"--select {select!r} matches no materializable asset")
    # one run holds unpartitioned assets and the assets of at most one partitions definition
    runs: list[tuple[str | None, list[dg.AssetKey]]] = []
    for key in order:
        asset = location.asset_by_key.get(key)
        sets = asset.partitions if asset is not None else None
        parts = sets.name if sets is not None else None
        if partition is not None and sets is not None and partition not in sets.keys:
            continue
        if not runs or (parts is not None and runs[-1][0] not in (None, parts)):
            runs.append((parts, []))
        elif parts is not None:
            runs[-1] = (parts, runs[-1][1])
        runs[-1][1].append(key)
    if not runs:
        raise SelectionError(f"no selected asset has a partition {partition!r}")
    return [PlannedRun(tuple(keys), _tags(location, name, partition)) for name, keys in runs]


def _tags(location: Location, name: str | None, partition: str | None) -> dict[str, str]:
    if name is None:
        return {}
    keys = next(
        a.partitions.keys
        for a in location.asset_by_key.values()
        if a.partitions is not None and a.partitions.name == name
    )
    if partition is not None:
        return {T.PARTITION_TAG: partition}
    if len(keys) == 1:
        return {T.PARTITION_TAG: keys[0]}
    return {T.RANGE_START_TAG: keys[0], T.RANGE_END_TAG: keys[-1]}


def stored_keys(
    location: Location, planned: PlannedRun
) -> dict[dg.AssetKey, dict[str | None, list[Instance]]]:
    """The assets of `planned` whose instances (in the run's partitions) are all stored and
    intact, by engine/plan.py's rule: they stay out of the run, so Dagster writes no planned
    event for them. None are when the code location has resource cells (a run records the
    releases it reads) or when planning fails (the run reports it)."""
    if location.has_resources:
        return {}
    try:
        actual = location.actual_instances()
        found = {}
        for key in planned.keys:
            asset = location.asset_by_key.get(key)
            if asset is None:
                continue
            pks = run_partition_keys(planned.tags, asset)
            step = location.step_instances({key: pks}, actual, tags=planned.tags)
            if not step.missing:
                found[key] = dict(step.by_asset[key])
        return found
    except FurtherError:
        return {}


def record_stored(
    instance: dg.DagsterInstance,
    location: Location,
    key: dg.AssetKey,
    by_pk: Mapping[str | None, list[Instance]],
) -> int:
    """A runless cache-hit materialization for each partition of `key` whose latest data
    version in Dagster is not its logic key (stored by a Session, say); how many. A partition
    Dagster already shows at its logic key needs nothing: what the UI shows is true."""
    latest = latest_versions(instance, key, [pk for pk in by_pk if pk is not None])
    stale = {pk: g for pk, g in by_pk.items() if latest.get(pk) != g[0].key}
    if not stale:
        return 0
    root = location.store().root
    inputs = input_tags(instance, location.asset_by_key[key].upstream)
    for pk, group in stale.items():
        meta = instance_metadata(
            root, group[0], True, 0.0, getattr(location.store(), "index_url", None)
        )
        meta[T.SKIPPED_STEP] = True
        instance.report_runless_asset_event(
            dg.AssetMaterialization(
                asset_key=key, partition=pk, metadata=meta, tags=version_tags(group[0], inputs)
            )
        )
    return len(stale)


def latest_versions(
    instance: dg.DagsterInstance, key: dg.AssetKey, partitions: Sequence[str]
) -> dict[str | None, str | None]:
    """Partition key (None: unpartitioned) -> the data version of its latest materialization,
    in one query for all partitions."""
    if not partitions:
        return {None: latest_data_version(instance, key, source=False)}
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=list(partitions)),
        limit=2 * len(partitions),
    ).records
    found: dict[str | None, str | None] = {}
    for record in records:  # newest first
        pk = record.partition_key
        if pk not in found:
            version = _compat.extract_data_version_from_entry(record.event_log_entry)
            found[pk] = version.value if version is not None else None
    return found


def materialize(
    module: str,
    attribute: str = "defs",
    select: str = "*",
    partition: str | None = None,
    *,
    working_directory: str | None = None,
    out: TextIO | None = None,
) -> bool:
    """Run the plan against the instance of `$DAGSTER_HOME`; True if every run succeeded.
    Stored assets stay out of the runs (`stored_keys`); a run of stored assets only is not
    created at all."""
    cwd = working_directory or os.getcwd()
    sys.path.insert(0, cwd)
    defs = getattr(importlib.import_module(module), attribute)
    location = location_of(defs)
    if location is None:
        raise SelectionError(f"{module}.{attribute} was not made by build_definitions")
    runs = plan_runs(defs, location, select, partition)
    stream = out if out is not None else sys.stdout

    def say(text: str) -> None:
        print(text, file=stream, flush=True)

    ok = True
    install_sqlite_engine_cache()  # this process writes the cache hits and creates the runs
    with dg.DagsterInstance.get() as instance:
        for number, planned in enumerate(runs, 1):
            say(f"run {number}/{len(runs)}: {planned.describe()}")
            stored = stored_keys(location, planned)
            if stored:
                with event_batch(instance):  # one commit for all of them (SQLite)
                    recorded = sum(
                        record_stored(instance, location, k, g) for k, g in stored.items()
                    )
                note = f" ({recorded} newly recorded as cache hits)" if recorded else ""
                say(f"  {len(stored)} asset(s) already stored, left out of the run{note}")
            keys = [k for k in planned.keys if k not in stored]
            if not keys:
                say("  nothing to run: no run created")
                continue
            job = _compat.reconstructable_asset_job(module, attribute, cwd)
            with dg.execute_job(
                job,
                instance=instance,
                asset_selection=keys,
                tags=planned.tags,
                raise_on_error=False,
            ) as result:
                run = instance.get_run_by_id(result.run_id)
                cached = run.tags.get(T.CACHED_STEPS, "0") if run is not None else "?"
                state = "succeeded" if result.success else "FAILED"
                say(f"  run {result.run_id} {state}; {cached} step(s) already stored")
                ok = ok and result.success
    return ok


__all__ = [
    "PlannedRun",
    "latest_versions",
    "materialize",
    "plan_runs",
    "record_stored",
    "stored_keys",
]
