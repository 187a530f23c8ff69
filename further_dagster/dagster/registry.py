"""Compiled projects: the projection plus what a run needs at execution time.

A code location builds one `Compiled` per `build_definitions` call; steps, the executor, the IO
manager and sensors find it by asset key (they all run in a process that loaded the code).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import dagster as dg

from further_dagster.core.cell import Cell
from further_dagster.core.graph import DefinitionGraph
from further_dagster.core.hashing import digest
from further_dagster.core.instances import CallContext, Instance, Resolver, walk
from further_dagster.core.project import resolve_cell
from further_dagster.dagster.projection import CellAsset, Projection

_BY_ASSET_KEY: dict[dg.AssetKey, Compiled] = {}
# Several Definitions may hold the same asset keys in one process (tests, notebooks); each
# compiled projection has a deterministic token, carried in its ops' tags, to tell them apart.
_BY_TOKEN: dict[str, Compiled] = {}
TOKEN_TAG = "further/compiled"

ReleaseResolver = Callable[[type[Cell], Any], str]
# freshness overrides of a run (None: the code location's defaults) -> a release resolver
ReleaseResolverFactory = Callable[[Any], ReleaseResolver]


def asset_key_for(cell: type[Cell]) -> dg.AssetKey:
    return dg.AssetKey([cell.project.name, cell.name])


class Compiled:
    """One projection of projects onto assets, and runtime resolution of actual instances."""

    def __init__(
        self,
        graph: DefinitionGraph,
        roots: Sequence[tuple[str | type[Cell], dict[str, Any]]] | None,
    ) -> None:
        self.graph = graph
        self.roots = [(resolve_cell(c), dict(v)) for c, v in roots] if roots is not None else None
        self.projection = Projection(graph, self.roots)
        self.asset_by_key: dict[dg.AssetKey, CellAsset] = {
            asset_key_for(cell): asset for cell, asset in self.projection.assets.items()
        }
        self.has_resources = any(c.is_resource for c in self.projection.assets)
        # Set by build_definitions when there are resource cells: resolves real releases.
        self.release_resolver_factory: ReleaseResolverFactory | None = None
        # The code location's freshness overrides (a FreshnessOverrides; runs may override).
        self.default_freshness: Any = None
        self.token = digest(
            {
                "cells": sorted(c.full_name for c in graph.order),
                "roots": [(c.full_name, v) for c, v in self.roots]
                if self.roots is not None
                else None,
            }
        )[:16]
        _BY_TOKEN[self.token] = self
        for key in self.asset_by_key:
            _BY_ASSET_KEY[key] = self

    def actual_instances(
        self, freshness: Any = None, *, resolver: ReleaseResolver | None = None
    ) -> dict[str, Instance]:
        """Structural key -> the instance with the releases of now (under the run's `freshness`
        overrides, or with `resolver`), dependencies first. Without resource cells the
        projection's instances are already the real ones."""
        if not self.has_resources or (resolver is None and self.release_resolver_factory is None):
            return {inst.skey: inst for inst in self.projection.instances}
        if resolver is None:
            assert self.release_resolver_factory is not None
            resolver = self.release_resolver_factory(freshness)
        graph_resolver = Resolver(self.graph, CallContext(release_resolver=resolver))
        roots = self.roots or [(c, {}) for c in self.graph.top_cells()]
        insts = walk([graph_resolver.instance(c, v) for c, v in roots])
        return {inst.skey: inst for inst in insts}

    def instances_for(
        self,
        asset_key: dg.AssetKey,
        partition_keys: Sequence[str] | None,
        actual: dict[str, Instance] | None = None,
        freshness: Any = None,
    ) -> dict[str | None, list[Instance]]:
        """Partition key (None when unpartitioned) -> actual instances of that partition."""
        asset = self.asset_by_key[asset_key]
        actual = actual if actual is not None else self.actual_instances(freshness)
        if asset.partitions is None:
            return {None: [actual[i.skey] for i in asset.instances[None]]}
        keys = partition_keys if partition_keys is not None else asset.partitions.keys
        unknown = [k for k in keys if k not in asset.instances]
        if unknown:
            raise dg.DagsterInvariantViolationError(
                f"{asset_key.to_user_string()} has no partition(s) {unknown}; its partitions are "
                f"{asset.partitions.keys} (they follow the cells' logic keys: reload the code "
                "location after changing Specs or logic_version)."
            )
        return {pk: [actual[i.skey] for i in asset.instances[pk]] for pk in keys}


def compiled_for(asset_key: dg.AssetKey, tags: Mapping[str, str] | None = None) -> Compiled:
    """The projection an asset belongs to: by the token in its op tags, else by asset key."""
    token = (tags or {}).get(TOKEN_TAG)
    token = getattr(token, "value", token)  # definition metadata wraps it
    if token is not None and token in _BY_TOKEN:
        return _BY_TOKEN[token]
    try:
        return _BY_ASSET_KEY[asset_key]
    except KeyError:
        raise dg.DagsterInvariantViolationError(
            f"{asset_key.to_user_string()} is not a further_dagster cell asset in this process"
        ) from None
