"""What of a call or a step is missing from the store: one rule for every caller.

A Session call, a Dagster asset step, the skip-cached executor, the Slurm step handler and the
release sensor all ask the same question: "to have these instances stored, which instances must
be computed?" The answer walks from the targets towards their dependencies and stops at any
stored instance, whose dependencies are then not needed at all: a cached key loads nothing and
computes nothing, whatever happened to the results below it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from further_dagster.core.instances import Instance, walk
from further_dagster.store import Store

if TYPE_CHECKING:
    from further_dagster.engine.releases import Resolved


def is_stored(store: Store, inst: Instance) -> bool:
    """One stat: is the instance's result committed?"""
    return store.is_stored(inst.cell.project.name, inst.cell.name, inst.key)


def missing(
    store: Store, targets: Sequence[Instance], *, order: Sequence[Instance] | None = None
) -> list[Instance]:
    """The instances (dependencies first) to compute so that every target is stored.

    A stored instance is never descended into, so a stored target costs one stat and its
    upstream is not looked at. `order` is `walk(targets)` when the caller has it already.
    """
    needed = {t.key for t in targets}
    out: list[Instance] = []
    for inst in reversed(order if order is not None else walk(list(targets))):
        # dependents come before their dependencies here, so `needed` is complete for `inst`
        if inst.key not in needed or is_stored(store, inst):
            continue
        out.append(inst)
        needed.update(d.key for d in inst.dep_instances())
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


def plan_for(
    store: Store,
    roots: Sequence[Instance],
    *,
    swept: bool = False,
    releases: tuple[Resolved, ...] = (),
    instances: list[Instance] | None = None,
) -> Plan:
    """The Plan of `roots` against `store` (`instances`: the walk of `roots`, if known)."""
    every = instances if instances is not None else walk(list(roots))
    todo = missing(store, roots, order=every)
    return Plan(
        roots=list(roots),
        instances=every,
        missing=todo,
        swept=swept,
        releases=releases,
        _missing_keys=frozenset(i.key for i in todo),
    )


__all__ = ["Plan", "is_stored", "missing", "plan_for"]
