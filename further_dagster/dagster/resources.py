"""The store as a Dagster resource, and an IO manager over it.

Cell assets commit their contributions themselves (atomically, under the store's lease), so the
IO manager's write side only checks; its read side gives plain Dagster assets downstream of a
cell that cell's contributions, loaded by logic key.
"""

from __future__ import annotations

from typing import Any

import dagster as dg
from pydantic import Field

from further_dagster.core.cell import Contributions
from further_dagster.engine.compute import load
from further_dagster.store import ArtifactStore

IO_MANAGER_KEY = "further_io_manager"
RESOURCE_KEY = "further"


class FurtherStore(dg.ConfigurableResource):  # type: ignore[type-arg]
    """Where cell results live and how a step computes them.

    Attributes:
        root: store root; default env FURTHER_ROOT, else `.further` beside pyproject.toml.
        mode: how a step runs several instances (a sweep range): INLINE or LOCAL (threads).
        max_workers: threads for LOCAL.
        freshness: call-time freshness override of resource cells (run config); the run tag
            `further/freshness` wins over it.
    """

    root: str | None = Field(
        default=None, description="Store root (default: FURTHER_ROOT or ./.further)"
    )
    mode: str = Field(default="LOCAL", description="INLINE or LOCAL for the instances of one step")
    max_workers: int | None = Field(default=None, description="Threads for LOCAL mode")
    freshness: str | None = Field(
        default=None,
        description=(
            "Freshness of resource cells for this run: latest, current:<seconds>, present, "
            "release:<pin>, date_range:<iso>..<iso>, or a JSON object "
            '{"project" | "project.cell": policy}. Default: the cells\' own policies.'
        ),
    )

    def store(self) -> ArtifactStore:
        return ArtifactStore(self.root)


class StoredCell:
    """What a cell asset's step outputs: a reference, never the data (it is in the store)."""

    def __init__(self, asset: str, keys: dict[str | None, list[str]]) -> None:
        self.asset = asset
        self.keys = keys

    def __repr__(self) -> str:
        return f"StoredCell({self.asset}, {sum(len(v) for v in self.keys.values())} instance(s))"


class FurtherIOManager(dg.ConfigurableIOManager):
    """Loads cell contributions for downstream assets; the cell steps write them.

    A plain asset with an input named after a cell asset receives that instance's
    Contributions, or a dict partition key -> Contributions when it reads several partitions.
    """

    root: str | None = Field(
        default=None, description="Store root (default: FURTHER_ROOT or ./.further)"
    )

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        if not isinstance(obj, StoredCell):
            raise TypeError(
                f"{IO_MANAGER_KEY} only stores cell results; asset {context.asset_key} returned "
                f"{type(obj).__name__}. Give non-cell assets another io_manager_key."
            )

    def load_input(self, context: dg.InputContext) -> Any:
        from further_dagster.dagster.registry import compiled_for

        upstream = context.upstream_output
        asset_key = context.asset_key if upstream is None else upstream.asset_key
        try:
            tags = dict(upstream.definition_metadata or {}) if upstream is not None else None
        except dg.DagsterInvariantViolationError:
            tags = None
        from further_dagster.dagster.releases import configured_freshness, run_freshness

        compiled = compiled_for(asset_key, tags)
        store = ArtifactStore(self.root)
        asset = compiled.asset_by_key[asset_key]
        freshness = None
        if compiled.has_resources:
            try:
                run = context.step_context.dagster_run
                freshness = run_freshness(compiled, run.tags, configured_freshness(run.run_config))
            except dg.DagsterInvariantViolationError:
                freshness = None
        actual = compiled.actual_instances(freshness)
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
