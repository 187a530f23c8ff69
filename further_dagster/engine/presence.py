"""Whether the instances of one plan are stored, in fewer stats than one per instance.

`engine/plan.py` asks "stored?" of every instance it must look at: one stat each, a million
for a new sweep of a million points, all of them misses. A cell whose first lookups mostly
missed has its directory listed once instead: a key without a directory there is not stored
(no stat), a listed key is stat'ed as before, so a mostly stored cell costs what it did and a
new one (or one never computed, whose directory does not exist) costs one listing.

The listing is as current as a stat made when it was taken. A plan is a snapshot either way:
what it calls missing is computed under a lease, which finds a result committed meanwhile.
"""

from __future__ import annotations

import os

from further_dagster.core.instances import Instance
from further_dagster.store import ArtifactStore, Store, layout

PROBE = 32
"""Lookups of one cell, stat by stat, before its directory may be listed."""

MAX_LISTED = 1 << 20
"""Names of one cell directory kept at most; a larger directory is looked up by stats."""


class StoredLookup:
    """`plan.is_stored` for the instances of one plan (`missing(..., looked=...)`).

    A cell's directory is listed once more than half of its lookups missed, judged after
    `PROBE` lookups and again each time their count doubles (a sweep extended far past its
    stored points turns mostly missing later on); a store other than an `ArtifactStore`, a
    directory that cannot be read or one of more than `MAX_LISTED` names keeps one stat per
    lookup.
    """

    __slots__ = ("_counts", "_listed")

    def __init__(self) -> None:
        # cell -> [asked, missed, when to judge next] while not listed
        self._counts: dict[tuple[str, str], list[int]] = {}
        self._listed: dict[tuple[str, str], frozenset[str]] = {}  # cell -> names in its directory

    def __call__(self, store: Store, inst: Instance) -> bool:
        cell = inst.cell
        project, name = cell.project.name, cell.name
        slot = (project, name)
        listed = self._listed.get(slot)
        if listed is not None:
            return inst.key in listed and store.is_stored(project, name, inst.key)
        stored = store.is_stored(project, name, inst.key)
        counts = self._counts.get(slot)
        if counts is None:
            counts = self._counts[slot] = [0, 0, PROBE]
        counts[0] += 1
        counts[1] += not stored
        if counts[0] >= counts[2]:
            found = _names(store, project, name) if 2 * counts[1] > counts[0] else None
            if found is not None:
                self._listed[slot] = found
            else:  # judged again at twice as many lookups; never, if it cannot be listed
                counts[2] = 2 * counts[2] if 2 * counts[1] <= counts[0] else _NEVER
        return stored


_NEVER = 1 << 62


def _names(store: Store, project: str, cell: str) -> frozenset[str] | None:
    """The names in the directory of `cell`'s instances (empty if it does not exist), or None
    when they cannot tell (not an `ArtifactStore`, unreadable, too many)."""
    if not isinstance(store, ArtifactStore):
        return None
    names: set[str] = set()
    try:
        with os.scandir(layout.cell_dir_prefix(str(store.root), project, cell)) as entries:
            for entry in entries:
                names.add(entry.name)
                if len(names) > MAX_LISTED:
                    return None
    except FileNotFoundError:
        return frozenset()
    except OSError:
        return None
    return frozenset(names)


__all__ = ["MAX_LISTED", "PROBE", "StoredLookup"]
