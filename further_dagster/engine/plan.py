"""What of a call or a step is missing from the store: one rule for every caller.

A Session call, a Dagster asset step, the skip-cached executor, the Slurm step handler and the
release sensor all ask the same question: "to have these instances stored, which instances must
be computed?" The answer walks from the targets towards their dependencies and stops at any
stored instance, whose dependencies are then not needed at all: a cached key loads nothing and
computes nothing, whatever happened to the results below it.

"Stored" is one stat by default. With `verify=True` (the Dagster skip-cached executor and asset
steps, which report cache hits without loading anything) it is `Store.is_intact`: the manifest
is readable and consistent with the cell's declaration and every file has its recorded size;
a stored instance that fails is moved aside (`Store.quarantine`) and counts as missing, so it
is recomputed instead of reported as a hit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from further_dagster.core.instances import Instance, walk
from further_dagster.store import Expected, Store

if TYPE_CHECKING:
    from further_dagster.engine.releases import Resolved


def is_stored(store: Store, inst: Instance) -> bool:
    """One stat: is the instance's result committed?"""
    return store.is_stored(inst.cell.project.name, inst.cell.name, inst.key)


def is_intact(store: Store, inst: Instance) -> bool:
    """Is the instance's result committed and intact (`Store.is_intact` against its cell's
    declaration)? One that is committed but not intact is moved aside (`Store.quarantine`),
    so it is recomputed."""
    cell = inst.cell
    project, name = cell.project.name, cell.name
    if not store.is_stored(project, name, inst.key):
        return False
    expect = Expected(contributions=cell.contributions, codec=cell.codec)
    if store.is_intact(project, name, inst.key, expect=expect):
        return True
    store.quarantine(
        project, name, inst.key, "failed the intact check (manifest, files, sizes) when planned"
    )
    return False


def missing(
    store: Store,
    targets: Sequence[Instance],
    *,
    order: Sequence[Instance] | None = None,
    verify: bool = False,
    looked: Callable[[Store, Instance], bool] | None = None,
) -> list[Instance]:
    """The instances (dependencies first) to compute so that every target is stored.

    A stored instance is never descended into, so a stored target costs one stat and its
    upstream is not looked at. `order` is `walk(targets)` when the caller has it already.
    `verify=True` judges "stored" by `is_intact` (and moves what fails aside) instead of a stat;
    `looked` replaces the stat (a Session's `ResultCache.stored`, which looks once for both).
    """
    stored = is_intact if verify else looked or is_stored
    needed = {t.key for t in targets}
    out: list[Instance] = []
    for inst in reversed(order if order is not None else walk(list(targets))):
        # dependents come before their dependencies here, so `needed` is complete for `inst`
        if inst.key not in needed or stored(store, inst):
            continue
        out.append(inst)
        for dep in inst.deps.values():
            if isinstance(dep, tuple):
                needed.update([d.key for d in dep])
            else:
                needed.add(dep.key)
    out.reverse()
    return out


@dataclass(frozen=True)
class Plan:
    """The instances one call (or step) needs.

    Attributes:
        roots: the targets (one per session-level VAR combination for a Session call).
        instances: every unique instance under the roots, dependencies first.
        missing: what must be computed so that every root is stored (see `missing`).
        swept: the call had a session-level VAR (the caller gets a list of results).
        releases: how each resource instance's release was chosen.
    """

    roots: list[Instance]
    instances: list[Instance]
    missing: list[Instance]
    swept: bool = False
    releases: tuple[Resolved, ...] = ()
    _missing_keys: frozenset[str] = field(default=frozenset(), repr=False, compare=False)

    @property
    def stored(self) -> list[Instance]:
        """Instances under the roots that need no computing (stored, or not needed)."""
        keys = self._missing_keys or frozenset(i.key for i in self.missing)
        return [i for i in self.instances if i.key not in keys]

    @property
    def runtime_edges(self) -> list[str]:
        """Edges resolved only when their caller runs, as "project.cell.edge (KIND)": not
        statically visible, so never pre-memoized or planned in parallel."""
        return sorted(
            {
                f"{i.cell.full_name}.{edge} ({d.kind})"
                for i in self.instances
                if i.dynamic
                for edge, d in i.dynamic.items()
            }
        )

    @property
    def stubs(self) -> list[str]:
        """STUB edges under the roots, as "project.cell.edge": temporary runtime values; move
        them to VAR or CONST once the values are known, so the planner can see them."""
        return [e.removesuffix(" (STUB)") for e in self.runtime_edges if e.endswith(" (STUB)")]


def plan_for(
    store: Store,
    roots: Sequence[Instance],
    *,
    swept: bool = False,
    releases: tuple[Resolved, ...] = (),
    instances: list[Instance] | None = None,
    verify: bool = False,
    looked: Callable[[Store, Instance], bool] | None = None,
) -> Plan:
    """The Plan of `roots` against `store` (`instances`: the walk of `roots`, if known;
    `verify`, `looked`: how "stored" is judged, see `missing`)."""
    every = instances if instances is not None else walk(list(roots))
    todo = missing(store, roots, order=every, verify=verify, looked=looked)
    return Plan(
        roots=list(roots),
        instances=every,
        missing=todo,
        swept=swept,
        releases=releases,
        _missing_keys=frozenset(i.key for i in todo),
    )


__all__ = ["Plan", "is_intact", "is_stored", "missing", "plan_for"]
