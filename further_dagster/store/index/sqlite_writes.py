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


class Writes:
    """One store's SQLite index, written through per-thread driver connections."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.path = url.split("///", 1)[1] if "///" in url else ""
        self._local = threading.local()
        self._checked_pid: int | None = None

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
        """One transaction: `rows` replace what the index had of the instance."""
        conn = self._connection()
        cursor = conn.cursor()
        try:
            cursor.execute("BEGIN IMMEDIATE")
            try:
                write(cursor, [rows], replace=replace, known_fields=known_fields)
            except BaseException:
                cursor.execute("ROLLBACK")
                raise
            cursor.execute("COMMIT")
        finally:
            cursor.close()


__all__ = ["Writes", "compiled", "write"]
