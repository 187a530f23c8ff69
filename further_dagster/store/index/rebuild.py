"""`further-dagster index rebuild`: the index made again from the store's files.

The store is the source of truth; the index is derived from it. A rebuild takes the index's
write lock (SQLite `BEGIN IMMEDIATE`; PostgreSQL takes the tables' locks as it drops them),
drops every table and view (of any schema version: this is also how an index of another
version is replaced), creates the current schema, reads every instance directory with the
same reader the commit hook uses (`rows.read_instance`) and writes the rows in batches, all in
one transaction: a reader sees the old index or the new one, and a commit that happens during
the rebuild waits for it and then adds its row.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from further_dagster.store.index import schema, views
from further_dagster.store.index.connection import connect, create_tables, created_here, dispose
from further_dagster.store.index.rows import InstanceRows, read_instance
from further_dagster.store.index.writer import forget_writers, write_rows
from further_dagster.store.integrity import iter_instance_dirs

BATCH = 2000


@dataclass(frozen=True, slots=True)
class RebuildReport:
    """What a rebuild wrote: instance rows, how many of them committed, and how long it took."""

    instances: int
    committed: int
    seconds: float


def rebuild(url: str, root: str) -> RebuildReport:
    """Replace the index at `url` with one built from the store at `root`.

    Raises:
        IndexConnectionError: the URL cannot be connected to.
    """
    start = time.perf_counter()
    count = committed = 0
    with connect(url, write=True, check=False) as conn:
        views.drop_all(conn)
        schema.metadata.drop_all(conn)
        create_tables(conn)
        batch: list[InstanceRows] = []
        for inst in iter_instance_dirs(root, None, None):
            if inst.is_symlink():  # never followed; `further-dagster verify` reports it
                continue
            project, cell, key = inst.parts[-3:]
            rows = read_instance(root, project, cell, key)
            if rows is None:
                continue
            count += 1
            committed += rows.instance["status"] == "success"
            batch.append(rows)
            if len(batch) >= BATCH:
                write_rows(conn, batch, replace=False)
                batch = []
        write_rows(conn, batch, replace=False)
        views.refresh(conn)
    forget_writers()
    dispose(url)  # the schema check of this process must run again
    created_here(url)  # rebuilt: nothing is behind
    return RebuildReport(count, committed, time.perf_counter() - start)


__all__ = ["RebuildReport", "rebuild"]
