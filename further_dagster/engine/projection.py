"""Project cells onto assets: which instances each asset holds, how they are partitioned, and how
partitions of neighbouring assets map. Pure planning; this module does not import dagster.

The rule:
- the graph is resolved from the project's roots (by default the cells nothing else requires,
  with default parameters), so every instance and its logic key is known at load time;
- a cell with one instance is an unpartitioned asset; a cell with several (a VAR sweep) is a
  partitioned asset with one partition per instance, keyed by the instance's logic key;
- a swept cell whose instances correspond one-to-one to the partitions of a swept dependent
  shares that dependent's partitions, so a sweep's cells line up partition by partition.
Partition keys come from "structural" keys, which ignore resource releases: a new release
changes logic keys, never partition keys. A resource cell is never partitioned: it becomes one
observable source asset whose observation covers all its instances.

At run time the projection's instances are re-resolved with real releases (`actual_instances`)
and looked up by partition (`instances_for`); the Dagster layer only translates asset keys and
run tags into these calls.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from further_dagster.core.cell import Cell
from further_dagster.core.graph import DefinitionGraph
from further_dagster.core.instances import (
    CallContext,
    Instance,
    ReleaseLookup,
    Resolver,
    walk,
)
from further_dagster.core.iterative import PREVIOUS_EDGE, Increments
from further_dagster.core.keys import STRUCTURAL_RELEASE
from further_dagster.core.project import resolve_cell
from further_dagster.errors import UnknownPartitionError

PARTITION_KEY_CHARS = 12  # the short structural-key suffix, where values do not tell apart
MAX_PARTITION_KEY = 100
# Dagster refuses these in partition keys (or in the tags and ranges that name them).
_KEY_TRANSLATION = str.maketrans({",": ";", "[": "(", "]": ")", "|": "/", "\n": " "})


@dataclass
class PartitionSet:
    """One partitions definition: ordered keys and a readable label for each."""

    name: str
    keys: list[str]
    labels: dict[str, str]


@dataclass
class CellAsset:
    """How one cell appears in Dagster."""

    cell: type[Cell]
    partitions: PartitionSet | None
    instances: dict[str | None, list[Instance]]  # partition key (None: unpartitioned) -> instances
    # upstream cell -> None (no mapping needed / identity) or {upstream key: [downstream keys]}
    upstream: dict[type[Cell], dict[str, list[str]] | None] = field(default_factory=dict)

    @property
    def partition_of(self) -> dict[str, str]:
        """Instance key -> partition key."""
        return {i.key: pk for pk, insts in self.instances.items() if pk for i in insts}


def _value_text(value: Any) -> str:
    if type(value) is int:
        return str(value)  # the common sweep value: digits and "-" need no replacing
    if isinstance(value, str):
        text = value
    else:
        try:
            text = json.dumps(value, separators=(",", ":"), sort_keys=True, default=str)
        except (TypeError, ValueError):
            text = repr(value)
    text = text.translate(_KEY_TRANSLATION).replace("...", "..")
    return text if text.isprintable() else "".join(ch for ch in text if ch.isprintable())


def partition_keys(insts: Sequence[Instance], fields: Sequence[str] | None = None) -> list[str]:
    """Readable, stable partition keys for a swept cell's instances.

    The key is built from the cell's own Specs fields whose values differ between its instances,
    in the order the Specs declare them: `alpha=0.1`, `alpha=0.1&depth=3`. Values are written
    as text (strings as they are, other values as compact JSON) with the characters Dagster
    refuses in keys replaced (`,` -> `;`, `[` `]` -> `(` `)`, `|` -> `/`, `...` -> `..`, no
    control characters). An upstream change never renames a partition (its data version
    changes instead). Where values do not tell instances apart (they differ only upstream, or
    the text is longer than 100 characters or collides), the key gets `@` and the first 12
    characters of the instance's structural key. `fields`: `_differing_fields(insts)`, when
    the caller has them.
    """
    if fields is None:
        fields = _differing_fields(insts)
    texts = [
        "&".join(f"{name}={_value_text(getattr(i.specs, name))}" for name in fields) for i in insts
    ]
    counts: dict[str, int] = {}
    for text in texts:
        counts[text] = counts.get(text, 0) + 1
    keys = []
    for inst, text in zip(insts, texts, strict=True):
        if not text or counts[text] > 1 or len(text) > MAX_PARTITION_KEY:
            short = text[:MAX_PARTITION_KEY]
            text = (
                f"{short}@{inst.skey[:PARTITION_KEY_CHARS]}"
                if short
                else inst.skey[:PARTITION_KEY_CHARS]
            )
        keys.append(text)
    return keys


def _differing_fields(insts: Sequence[Instance]) -> list[str]:
    """The Specs fields whose values differ between a cell's instances (declaration order)."""
    if not insts:
        return []
    return [
        name
        for name in type(insts[0].specs).model_fields
        if len({repr(getattr(i.specs, name)) for i in insts}) > 1
    ]


def _label(fields: Sequence[str], inst: Instance) -> str:
    """The differing Specs of one instance, e.g. `alpha=0.1` (its upstream if none differ)."""
    if fields:
        return ", ".join(f"{name}={getattr(inst.specs, name)!r}" for name in fields)
    return (
        "upstream " + ", ".join(f"{d.cell.name}@{d.key[:8]}" for d in inst.dep_instances())
        or inst.key[:PARTITION_KEY_CHARS]
    )


def _earlier_increments(instances: Sequence[Instance], roots: Sequence[Instance]) -> set[str]:
    """Keys of increments that only the next increment of their chain requires: steps toward
    the increment an asset is, not instances of the asset themselves."""
    via_previous: set[str] = set()
    elsewhere = {r.key for r in roots}
    for inst in instances:
        for edge, dep in inst.deps.items():
            for d in dep if isinstance(dep, tuple) else (dep,):
                (via_previous if edge == PREVIOUS_EDGE else elsewhere).add(d.key)
    return via_previous - elsewhere


class Projection:
    """Every cell of `graph` under the given roots, as assets."""

    def __init__(
        self,
        graph: DefinitionGraph,
        roots: Sequence[tuple[str | type[Cell], Mapping[str, Any]]] | None = None,
        context: CallContext | None = None,
        increments: Mapping[type[Cell], Increments] | None = None,
    ) -> None:
        self.graph = graph
        context = context or CallContext()
        context.release_resolver = lambda cell, specs: STRUCTURAL_RELEASE
        self.context = context  # labels' params/specs/opts: actual_instances resolves with them
        resolver = Resolver(graph, context)
        if roots is None:
            roots = [(cell, {}) for cell in graph.top_cells()]
        self.roots: list[tuple[type[Cell], dict[str, Any]]] = [
            (resolve_cell(c), dict(values)) for c, values in roots
        ]
        # the instruction of an incrementing root (a run's op config); others use their own
        self.increments = dict(increments or {})
        root_instances = [
            resolver.instance(c, values, increments=self.increments.get(c))
            for c, values in self.roots
        ]
        self.instances = walk(root_instances)
        earlier = _earlier_increments(self.instances, root_instances)
        by_cell: dict[type[Cell], list[Instance]] = {}
        for inst in self.instances:
            if inst.key not in earlier:
                by_cell.setdefault(inst.cell, []).append(inst)
        self.assets: dict[type[Cell], CellAsset] = {}
        # dependents first, so a swept cell can adopt its dependent's partitions
        for cell in reversed(graph.order):
            if cell in by_cell:
                self.assets[cell] = self._asset_for(cell, by_cell[cell])
        for asset in self.assets.values():
            asset.upstream = {
                up: self._mapping(self.assets[up], asset)
                for up in set(graph.ordered_targets(asset.cell))  # an ITER step is no asset dep
                if up in self.assets
            }

    def _asset_for(self, cell: type[Cell], insts: list[Instance]) -> CellAsset:
        if len(insts) == 1 or cell.is_resource:
            # a resource cell is one (observable source) asset, however many instances it has
            return CellAsset(cell, None, {None: insts})
        for dependent in self.graph.dependents(cell):
            adopted = self._adopt(cell, insts, self.assets.get(dependent))
            if adopted is not None:
                return adopted
        fields = _differing_fields(insts)  # once per cell: a sweep of n points is O(n)
        keys = partition_keys(insts, fields)
        labels = {k: _label(fields, i) for k, i in zip(keys, insts, strict=True)}
        parts = PartitionSet(f"{cell.project.asset_name}__{cell.asset_name}", keys, labels)
        return CellAsset(cell, parts, {k: [i] for k, i in zip(keys, insts, strict=True)})

    @staticmethod
    def _adopt(
        cell: type[Cell], insts: list[Instance], dependent: CellAsset | None
    ) -> CellAsset | None:
        if dependent is None or dependent.partitions is None:
            return None
        owner: dict[str, set[str]] = {i.key: set() for i in insts}
        for pk, dep_insts in dependent.instances.items():
            for d in dep_insts:
                for up in d.dep_instances():
                    if up.key in owner and pk is not None:
                        owner[up.key].add(pk)
        if any(len(pks) != 1 for pks in owner.values()):
            return None
        by_partition: dict[str, list[Instance]] = {}
        for inst in insts:
            by_partition.setdefault(next(iter(owner[inst.key])), []).append(inst)
        if set(by_partition) != set(dependent.partitions.keys):
            return None
        if any(len(v) != 1 for v in by_partition.values()):
            return None
        ordered = {pk: by_partition[pk] for pk in dependent.partitions.keys}
        return CellAsset(cell, dependent.partitions, ordered)  # type: ignore[arg-type]

    @staticmethod
    def _mapping(up: CellAsset, down: CellAsset) -> dict[str, list[str]] | None:
        if up.partitions is None or down.partitions is None:
            return None
        if up.partitions is down.partitions:
            return None  # identity
        up_partition = up.partition_of
        mapping: dict[str, list[str]] = {k: [] for k in up.partitions.keys}
        for pk, insts in down.instances.items():
            for inst in insts:
                for dep in inst.dep_instances():
                    upk = up_partition.get(dep.key)
                    if upk is not None and pk is not None and pk not in mapping[upk]:
                        mapping[upk].append(pk)
        return mapping

    def asset(self, cell: type[Cell]) -> CellAsset:
        return self.assets[cell]

    @property
    def has_resources(self) -> bool:
        return any(c.is_resource for c in self.assets)

    def actual_instances(self, releases: ReleaseLookup | None = None) -> dict[str, Instance]:
        """Structural key -> the instance with real releases (from `releases`), dependencies
        first. Without resource cells the projection's own instances are the real ones."""
        if not self.has_resources or releases is None:
            return {inst.skey: inst for inst in self.instances}
        resolver = Resolver(self.graph, replace(self.context, release_resolver=releases))
        insts = walk(
            [resolver.instance(c, v, increments=self.increments.get(c)) for c, v in self.roots]
        )
        return {inst.skey: inst for inst in insts}

    def instances_for(
        self,
        cell: type[Cell],
        partition_keys: Sequence[str] | None,
        actual: Mapping[str, Instance],
    ) -> dict[str | None, list[Instance]]:
        """Partition key (None when unpartitioned) -> the actual instances of that partition;
        `partition_keys` None means every partition."""
        asset = self.assets[cell]
        if asset.partitions is None:
            return {None: [actual[i.skey] for i in asset.instances[None]]}
        keys = partition_keys if partition_keys is not None else asset.partitions.keys
        unknown = [k for k in keys if k not in asset.instances]
        if unknown:
            raise UnknownPartitionError(
                f"{cell.full_name} has no partition(s) {unknown}; its partitions are "
                f"{asset.partitions.keys} (they follow the cells' logic keys: reload the code "
                "location after changing Specs or logic_version)."
            )
        return {pk: [actual[i.skey] for i in asset.instances[pk]] for pk in keys}
