"""The commit path on SQLite, without SQLAlchemy in the way.

Every computed cell writes its rows; SQLAlchemy's per-statement machinery (execution context,
events, pool checkout) would cost more than the SQL itself. So on SQLite the statements are
compiled once by SQLAlchemy (the same SQL, and the same bind processors: times are written as
SQLAlchemy writes them) and run with `executemany` on a connection of the driver kept per
thread (and per process: a forked child opens its own). The schema is checked once per
process through the SQLAlchemy path (`connection.connect`). The connection has the pragmas of
`connection._sqlite_pragmas` and takes the write lock at `BEGIN IMMEDIATE`.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Sequence
from typing import Any

from sqlalchemy.dialects import sqlite

from further_dagster.errors import RecordIndexError
from further_dagster.store.index import connection
from further_dagster.store.index.rows import FieldRow, InstanceRows


class _Raw:
    """One statement compiled once for SQLite, run on the driver's cursor with `executemany`;
    values go through the bind processors SQLAlchemy would apply."""

    def __init__(self, stmt: Any, dialect: Any) -> None:
        compiled = stmt.compile(dialect=dialect)
        self.sql = str(compiled)
        self.order = list(compiled.positiontup or ())
        processors = {
            c.name: c.type.dialect_impl(dialect).bind_processor(dialect) for c in stmt.table.columns
        }
        self.processors = [processors.get(name) for name in self.order]

    def run(self, cursor: Any, rows: Sequence[dict[str, Any]]) -> None:
        pairs = list(zip(self.order, self.processors, strict=True))
        cursor.executemany(
            self.sql,
            [
                tuple(
                    p(row[name]) if p is not None and row[name] is not None else row[name]
                    for name, p in pairs
                )
                for row in rows
            ],
        )


class _Compiled:
    def __init__(self) -> None:
        from further_dagster.store.index.writer import _Statements

        st = _Statements("sqlite")
        d = sqlite.dialect()
        self.upsert_instance = _Raw(st.upsert_instance, d)
        self.insert_edges = _Raw(st.insert_edges, d)
        self.insert_contributions = _Raw(st.insert_contributions, d)
        self.insert_fields = _Raw(st.insert_fields, d)
        self.delete_edges = _Raw(st.delete_edges, d)
        self.delete_contributions = _Raw(st.delete_contributions, d)


_compiled: list[_Compiled] = []


def compiled() -> _Compiled:
    if not _compiled:
        _compiled.append(_Compiled())
    return _compiled[0]


def write(
    cursor: Any,
    rows: Sequence[InstanceRows],
    *,
    replace: bool,
    known_fields: set[FieldRow] | None,
) -> None:
    """The statements of `rows` on `cursor`, inside the caller's transaction."""
    from further_dagster.store.index.writer import fields_of

    c = compiled()
    if replace:
        keys = [{"k": r.key} for r in rows]
        c.delete_edges.run(cursor, keys)
        c.delete_contributions.run(cursor, keys)
    c.upsert_instance.run(cursor, [r.instance for r in rows])
    edges = [e for r in rows for e in r.edges]
    if edges:
        c.insert_edges.run(cursor, edges)
    contributions = [x for r in rows for x in r.contributions]
    if contributions:
        c.insert_contributions.run(cursor, contributions)
    wanted = fields_of(rows, known_fields)
    if wanted:
        c.insert_fields.run(cursor, wanted)


class _Ticket:
    """One instance's rows waiting for a transaction of the group commit."""

    __slots__ = ("done", "error", "known_fields", "replace", "rows")

    def __init__(self, rows: InstanceRows, replace: bool, known_fields: set[FieldRow]) -> None:
        self.rows, self.replace, self.known_fields = rows, replace, known_fields
        self.done = False
        self.error: BaseException | None = None


class Writes:
    """One store's SQLite index, written through per-thread driver connections.

    Threads of one process commit as a group: each queues its rows, and whichever thread
    holds the process's write turn writes every row queued by then in one transaction, so
    parallel commits neither queue for SQLite's file lock (whose busy handler sleeps for
    milliseconds between tries, 1, 2, 5, 10, ... ms) nor pay a transaction each. A thread
    returns only once its rows are written, or raises what the write of its group raised.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.path = url.split("///", 1)[1] if "///" in url else ""
        self._local = threading.local()
        self._checked_pid: int | None = None
        self._queued: list[_Ticket] = []
        self._queue_lock = threading.Lock()
        self._turn = threading.Lock()  # one writing thread per process

    def _connection(self) -> sqlite3.Connection:
        pid = os.getpid()
        if self._checked_pid != pid:
            with connection.connect(self.url):  # the schema check (and creation), once
                pass
            self._checked_pid = pid
        found: tuple[int, sqlite3.Connection] | None = getattr(self._local, "conn", None)
        if found is not None and found[0] == pid:
            return found[1]
        conn = sqlite3.connect(
            self.path,
            timeout=connection.BUSY_TIMEOUT_MS / 1000,
            isolation_level=None,
            check_same_thread=False,
        )
        connection._sqlite_pragmas(conn, None)
        self._local.conn = (pid, conn)
        return conn

    def write(self, rows: InstanceRows, *, replace: bool, known_fields: set[FieldRow]) -> None:
        """`rows` replace what the index had of the instance, in the next group transaction."""
        ticket = _Ticket(rows, replace, known_fields)
        with self._queue_lock:
            self._queued.append(ticket)
        with self._turn:
            if not ticket.done:
                with self._queue_lock:
                    group, self._queued = self._queued, []
                self._write_group(group)
        if ticket.error is not None:
            raise ticket.error

    def _write_group(self, group: list[_Ticket]) -> None:
        # the last rows of a key win, and they replace earlier ones if any of its tickets did
        last: dict[str, _Ticket] = {}
        replaced: set[str] = set()
        for ticket in group:
            last.pop(ticket.rows.key, None)
            last[ticket.rows.key] = ticket
            if ticket.replace:
                replaced.add(ticket.rows.key)
        known = set.intersection(*(t.known_fields for t in group))
        try:
            conn = self._connection()
            cursor = conn.cursor()
            try:
                cursor.execute("BEGIN IMMEDIATE")
                try:
                    for replace in (True, False):
                        rows = [t.rows for k, t in last.items() if (k in replaced) is replace]
                        if rows:
                            write(cursor, rows, replace=replace, known_fields=known)
                except BaseException:
                    cursor.execute("ROLLBACK")
                    raise
                cursor.execute("COMMIT")
            finally:
                cursor.close()
        except BaseException as exc:
            # the others' threads get an index error to warn about, never the interrupt
            shared = (
                exc
                if isinstance(exc, Exception)
                else RecordIndexError(f"the index write was interrupted ({exc!r})")
            )
            for ticket in group:
                ticket.error = shared
            raise
        finally:
            for ticket in group:
                ticket.done = True


__all__ = ["Writes", "compiled", "write"]
