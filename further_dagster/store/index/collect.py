"""`further-dagster gc`: which instances to delete, and deleting one without racing anyone.

What is kept: every instance reachable from the roots, following the index's `edges` (an
instance's dependencies, transitively). The roots are the instances of the current
definitions (`-m MODULE`: the engine resolves them), or else every instance newer than the
date. What is deleted: the other instances (of the module's projects only, with `-m`), older
than the date when one is given. Never an instance that is reachable, and never one whose lease
is held by a live process: deleting takes the lease first, then moves the directory aside
under the lease's guard (so no commit can interleave) and removes it.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import sqlalchemy as sa

from further_dagster.store import layout
from further_dagster.store.index import schema
from further_dagster.store.index.connection import connect
from further_dagster.store.index.query import as_utc
from further_dagster.store.lease import Lease

Deleted = Literal["deleted", "held", "gone"]


@dataclass(frozen=True, slots=True)
class Candidate:
    """An instance gc would delete, and why."""

    project: str
    cell: str
    key: str
    status: str
    when: dt.datetime | None
    reason: str

    @property
    def label(self) -> str:
        return f"{self.project}.{self.cell}@{self.key}"


def reachable(url: str, roots: Iterable[str]) -> set[str]:
    """`roots` and every instance they depend on, transitively, by the index's edges."""
    e = schema.edges
    with connect(url) as conn:
        children: dict[str, list[str]] = {}
        for parent, child in conn.execute(sa.select(e.c.parent_key, e.c.child_key)):
            children.setdefault(parent, []).append(child)
    seen = set(roots)
    stack = list(seen)
    while stack:
        for child in children.get(stack.pop(), ()):
            if child not in seen:
                seen.add(child)
                stack.append(child)
    return seen


def candidates(
    url: str,
    *,
    roots: Iterable[str] | None,
    projects: Iterable[str] | None = None,
    older_than: dt.datetime | None = None,
) -> list[Candidate]:
    """What gc deletes (see the module docstring); `roots=None` needs `older_than`."""
    if roots is None and older_than is None:
        raise ValueError("gc needs the current definitions (roots) or a date")
    i = schema.instances
    with connect(url) as conn:
        rows = conn.execute(
            sa.select(
                i.c.key, i.c.project, i.c.cell, i.c.status, i.c.finished_at, i.c.created_at
            ).order_by(i.c.project, i.c.cell, i.c.key)
        ).all()
    when = {r.key: as_utc(r.finished_at or r.created_at) for r in rows}
    if roots is None:
        assert older_than is not None
        roots = [k for k, t in when.items() if t is None or t >= older_than]
        why = f"not needed by any instance since {older_than.isoformat()}"
    else:
        why = "not reachable from the current definitions"
    kept = reachable(url, roots)
    wanted = None if projects is None else set(projects)
    out = []
    for r in rows:
        t = when[r.key]
        if r.key in kept or (wanted is not None and r.project not in wanted):
            continue
        if older_than is not None and t is not None and t >= older_than:
            continue
        out.append(Candidate(r.project, r.cell, r.key, r.status, t, why))
    return out


def delete_instance(root: str, project: str, cell: str, key: str, lease_s: float) -> Deleted:
    """Delete one instance directory unless a live process holds its lease ("held")."""
    inst = Path(layout.instance_dir_str(root, project, cell, key))
    if not os.path.isdir(inst) or os.path.islink(inst):
        return "gone"
    lease = Lease(inst, lease_s=lease_s)
    if lease.try_acquire() == "held":
        return "held"
    trash = inst.parent / f".gc-{key}-{lease.token}"  # not a key: invisible to the store
    try:
        with lease.holding() as ours:
            if not ours:
                return "held"
            os.rename(inst, trash)
    finally:
        lease.release()
    shutil.rmtree(trash, ignore_errors=True)
    return "deleted"


__all__ = ["Candidate", "Deleted", "candidates", "delete_instance", "reachable"]
