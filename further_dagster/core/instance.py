"""An Instance: one cell with every parameter resolved, a node of the Instance Tree that
`core/instances.py` resolves; and `walk`, the unique instances under some roots."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from further_dagster.core.cell import Cell
from further_dagster.core.edges import DynamicEdge
from further_dagster.core.params import Opts, Specs


@dataclass(eq=False, slots=True)
class Instance:
    """One cell with resolved Specs/Opts and resolved dependencies; `key` is its logic key.
    Never changed once resolved (not `frozen`: that costs ~2 µs per instance to build)."""

    cell: type[Cell]
    specs: Specs
    opts: Opts
    deps: Mapping[str, Instance | tuple[Instance, ...]]
    key: str
    release: str | None = None
    # The key with every resource release replaced by a placeholder: stable across releases,
    # so it can name things (partitions) that must not change when external data changes.
    skey: str = ""
    # Releases of every resource instance under this one (itself included), by label; built
    # once at resolution so provenance never walks the graph per instance.
    upstream_releases: Mapping[str, str] = field(default_factory=dict)
    # DYN / STUB / RAND edges, by name: resolved when this instance computes.
    dynamic: Mapping[str, DynamicEdge] = field(default_factory=dict)
    # An IncrementingCell's increment (1-based; 0 for any other cell) and its base instance's
    # key, from which every increment's key derives (core/iterative.py).
    increment: int = 0
    base: str = ""
    # Records of the call-time transformers that set its Specs (core/iterative.py).
    transformed: tuple[dict[str, Any], ...] = ()
    labels: tuple[str, ...] = ()  # of the call that computes it (set then): provenance only

    @property
    def label(self) -> str:
        """`project.cell@key12` (`#i` after an increment's), the short name used in logs."""
        if self.increment:
            return f"{self.cell.full_name}@{self.key[:12]}#{self.increment}"
        return f"{self.cell.full_name}@{self.key[:12]}"

    def dep_instances(self) -> Iterator[Instance]:
        for dep in self.deps.values():
            if isinstance(dep, tuple):
                yield from dep
            else:
                yield dep

    def dep_keys(self) -> dict[str, str | list[str]]:
        return {
            edge: [d.key for d in dep] if isinstance(dep, tuple) else dep.key
            for edge, dep in self.deps.items()
        }

    def releases(self) -> dict[str, str]:
        """Releases of every resource instance this one rests on, itself included."""
        return dict(self.upstream_releases)

    def __repr__(self) -> str:
        return f"Instance({self.label})"


def walk(roots: list[Instance]) -> list[Instance]:
    """Unique instances (by key) under `roots`, dependencies before dependents."""
    seen: set[str] = set()
    order: list[Instance] = []
    stack: list[tuple[Instance, bool]] = [(r, False) for r in reversed(roots)]
    while stack:
        inst, expanded = stack.pop()
        if expanded:
            if inst.key not in seen:
                seen.add(inst.key)
                order.append(inst)
            continue
        if inst.key in seen:
            continue
        stack.append((inst, True))
        for dep in reversed(list(inst.dep_instances())):
            if dep.key not in seen:
                stack.append((dep, False))
    return order


__all__ = ["Instance", "walk"]
