"""The `further` resource and the IO manager: both carry the code location they came from.

Cell assets commit their contributions themselves (atomically, under the store's lease), so the
IO manager's write side only checks; its read side gives plain Dagster assets downstream of a
cell that cell's contributions, loaded by logic key.
"""

from __future__ import annotations

from typing import Any

import dagster as dg

from further_dagster.core.cell import Contributions
from further_dagster.dagster.location import (
    IO_MANAGER_KEY,
    FurtherResourceDefinition,
    Location,
)
from further_dagster.dagster.run_config import run_freshness
from further_dagster.engine.compute import load
from further_dagster.store import Store

_FRESHNESS_HELP = (
    "Freshness of resource cells for this run: latest, current:<seconds>, present, "
    "release:<pin>, date_range:<iso>..<iso>, or a JSON object "
    '{"project" | "project.cell": policy}. Default: the code location\'s, else the cells\' own '
    "policies; the run tag further/freshness wins over it."
)


class FurtherResource:
    """What a cell step gets as `context.resources.further`.

    Attributes:
        location: the code location the step belongs to (store, projection, defaults).
        within_step: how a step runs its own instances (a sweep range) when neither the run
            tag nor the executor config sets the run's mode: INLINE, LOCAL (threads) or
            LOCAL_PROCESSES (None: the location's `build_definitions(mode=)`). Not the run's
            mode, which decides how steps run.
        max_workers: threads or processes for the step's instances.
    """

    def __init__(self, location: Location, config: dict[str, Any]) -> None:
        self.location = location
        self.within_step: str | None = config.get("within_step")
        self.max_workers: int | None = config.get("max_workers")

    def store(self) -> Store:
        return self.location.store()


def further_resource(location: Location) -> FurtherResourceDefinition:
    """The `further` resource definition of `location`."""
    definition = FurtherResourceDefinition(
        resource_fn=lambda init: FurtherResource(location, dict(init.resource_config or {})),
        config_schema={
            "within_step": dg.Field(
                dg.Noneable(str),
                default_value=None,
                description="INLINE, LOCAL or LOCAL_PROCESSES: how one step runs its own "
                "instances (default: the code location's mode; the run tag further/mode and "
                "the executor config `mode`, which set the run's mode, win over it)",
            ),
            "max_workers": dg.Field(
                dg.Noneable(int), default_value=None, description="Threads/processes of a step"
            ),
            "freshness": dg.Field(
                dg.Noneable(str), default_value=None, description=_FRESHNESS_HELP
            ),
        },
        description="further_dagster: the artifact store and the settings of cell steps.",
    )
    definition.location = location
    return definition


class StoredCell:
    """What a cell asset's step outputs: a reference, never the data (it is in the store)."""

    def __init__(self, asset: str, keys: dict[str | None, list[str]]) -> None:
        self.asset = asset
        self.keys = keys

    def __repr__(self) -> str:
        return f"StoredCell({self.asset}, {sum(len(v) for v in self.keys.values())} instance(s))"


class FurtherIOManager(dg.IOManager):
    """Loads cell contributions for downstream assets; the cell steps write them.

    A plain asset with an input named after a cell asset receives that instance's
    Contributions, or a dict partition key -> Contributions when it reads several partitions.
    """

    def __init__(self, location: Location) -> None:
        self.location = location

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        if not isinstance(obj, StoredCell):
            raise TypeError(
                f"{IO_MANAGER_KEY} only stores cell results; asset {context.asset_key} returned "
                f"{type(obj).__name__}. Give non-cell assets another io_manager_key."
            )

    def load_input(self, context: dg.InputContext) -> Any:
        location = self.location
        upstream = context.upstream_output
        asset_key = context.asset_key if upstream is None else upstream.asset_key
        asset = location.asset_by_key[asset_key]
        freshness = None
        if location.has_resources:
            try:
                run = context.step_context.dagster_run
                freshness = run_freshness(location, run.tags, run.run_config)
            except dg.DagsterInvariantViolationError:  # no run (a direct load_input call)
                freshness = None
        actual = location.actual_instances(freshness)
        store = location.store()
        if asset.partitions is None:
            (inst,) = asset.instances[None]
            return load(store, actual[inst.skey])
        keys = (
            context.asset_partition_keys if context.has_asset_partitions else asset.partitions.keys
        )
        out: dict[str, Contributions | list[Contributions]] = {}
        for pk in keys:
            insts = [load(store, actual[i.skey]) for i in asset.instances[pk]]
            out[pk] = insts[0] if len(insts) == 1 else insts
        return out


def further_io_manager(location: Location) -> dg.IOManagerDefinition:
    """The IO manager definition of `location`."""
    return dg.IOManagerDefinition(
        resource_fn=lambda _init: FurtherIOManager(location),
        description="further_dagster: loads cell contributions from the artifact store.",
    )


__all__ = [
    "FurtherIOManager",
    "FurtherResource",
    "StoredCell",
    "further_io_manager",
    "further_resource",
]
