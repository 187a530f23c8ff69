"""`further-dagster materialize`: the stock `dagster asset materialize`, with partitions filled in.

The stock command refuses a selection that holds partitioned assets unless it is given one
partition or a range, and refuses a range over assets with different partitions definitions.
Here every swept cell is covered (all its partitions by default, or `--partition KEY`), with the
same selection syntax (`*`, `group:example`, `+example/report`, `example/fit`, comma-separated),
in as few runs as the partitions allow: the selected assets are walked in dependency order and a
new run starts where a second partitions definition appears (one run holds the unpartitioned
assets and one partitions definition's assets). Each run goes through the code
location's own executor (stored steps are never started), exactly like the stock command.
"""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass
from typing import TextIO

import dagster as dg

from further_dagster.dagster import _compat
from further_dagster.dagster import tags as T
from further_dagster.dagster.location import Location, location_of
from further_dagster.errors import SelectionError


@dataclass(frozen=True)
class PlannedRun:
    """One run of the plan: the asset keys, and the partition tags it carries (if any)."""

    keys: tuple[dg.AssetKey, ...]
    tags: dict[str, str]

    def describe(self) -> str:
        names = ", ".join(k.to_user_string() for k in self.keys)
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


def materialize(
    module: str,
    attribute: str = "defs",
    select: str = "*",
    partition: str | None = None,
    *,
    working_directory: str | None = None,
    out: TextIO | None = None,
) -> bool:
    """Run the plan against the instance of `$DAGSTER_HOME`; True if every run succeeded."""
    cwd = working_directory or os.getcwd()
    sys.path.insert(0, cwd)
    defs = getattr(importlib.import_module(module), attribute)
    location = location_of(defs)
    if location is None:
        raise SelectionError(f"{module}.{attribute} was not made by build_definitions")
    runs = plan_runs(defs, location, select, partition)
    stream = out if out is not None else sys.stdout
    ok = True
    with dg.DagsterInstance.get() as instance:
        for number, planned in enumerate(runs, 1):
            print(f"run {number}/{len(runs)}: {planned.describe()}", file=stream, flush=True)
            job = _compat.reconstructable_asset_job(module, attribute, cwd)
            with dg.execute_job(
                job,
                instance=instance,
                asset_selection=list(planned.keys),
                tags=planned.tags,
                raise_on_error=False,
            ) as result:
                run = instance.get_run_by_id(result.run_id)
                cached = run.tags.get(T.CACHED_STEPS, "0") if run is not None else "?"
                state = "succeeded" if result.success else "FAILED"
                print(
                    f"  run {result.run_id} {state}; {cached} step(s) already stored",
                    file=stream,
                    flush=True,
                )
                ok = ok and result.success
    return ok


__all__ = ["PlannedRun", "materialize", "plan_runs"]
