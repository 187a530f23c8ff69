"""Writing the index: the rows of one instance in one transaction, at commit.

`IndexWriter.refresh(project, cell, key)` reads the instance's files (`rows.read_instance`)
and replaces its rows, or deletes them when there is nothing left to index (removed by gc).
`ArtifactStore` calls `record_quietly` right after the commit rename (and after a failed
attempt, a quarantine, a reset): a failing index never fails the commit. It logs one warning
naming the index URL (without password) and `further-dagster index rebuild`, then leaves the
index alone for `RETRY_AFTER_S` so that a dead server does not cost a connect timeout per cell.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from further_dagster import settings
from further_dagster.store import layout
from further_dagster.store.index import schema, sqlite_writes
from further_dagster.store.index.connection import connect, created_here
from further_dagster.store.index.rows import FieldRow, InstanceRows, read_instance
from further_dagster.store.integrity import iter_instance_dirs

log = logging.getLogger("further.store.index")

RETRY_AFTER_S = 60.0


class _Statements:
    """The statements of one dialect, built once (SQLAlchemy then reuses their compiled form)."""

    def __init__(self, dialect: str) -> None:
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        i = schema.instances
        upsert = insert(i)
        self.upsert_instance = upsert.on_conflict_do_update(
            index_elements=[i.c.key],
            set_={c.name: upsert.excluded[c.name] for c in i.columns if c.name != "key"},
        )
        self.insert_edges = _upsert(insert, schema.edges)
        self.insert_contributions = _upsert(insert, schema.contributions)
        self.insert_fields = insert(schema.fields).on_conflict_do_nothing()
        key: sa.BindParameter[str] = sa.bindparam("k")
        self.delete_instance = sa.delete(i).where(i.c.key == key)
        self.delete_edges = sa.delete(schema.edges).where(schema.edges.c.parent_key == key)
        self.delete_contributions = sa.delete(schema.contributions).where(
            schema.contributions.c.key == key
        )


def _upsert(insert: Any, table: sa.Table) -> Any:
    stmt = insert(table)
    keys = [c for c in table.columns if c.primary_key]
    return stmt.on_conflict_do_update(
        index_elements=keys,
        set_={c.name: stmt.excluded[c.name] for c in table.columns if not c.primary_key},
    )


_statements: dict[str, _Statements] = {}


def statements(conn: Connection) -> _Statements:
    name = conn.dialect.name
    found = _statements.get(name)
    if found is None:
        found = _statements[name] = _Statements(name)
    return found


def write_rows(
    conn: Connection,
    rows: Sequence[InstanceRows],
    *,
    replace: bool = True,
    known_fields: set[FieldRow] | None = None,
) -> None:
    """Upsert `rows` inside `conn`'s transaction (their new fields too; views: `views.sync`).

    On SQLite the statements run on the driver's cursor (`sqlite_writes`). `replace=False`
    skips deleting earlier edge and contribution rows: a rebuild into empty
    tables, or a fresh commit (a key that was never committed has none, and one whose result
    was moved aside had them deleted then). `known_fields` are fields known to be in the
    catalog already (skipped).
    """
    if not rows:
        return
    st = statements(conn)
    if replace:
        keys = [{"k": r.key} for r in rows]
        conn.execute(st.delete_edges, keys)
        conn.execute(st.delete_contributions, keys)
    if conn.dialect.name == "sqlite":
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        try:
            sqlite_writes.write(cursor, rows, replace=False, known_fields=known_fields)
        finally:
            cursor.close()
        return
    conn.execute(st.upsert_instance, [r.instance for r in rows])
    edges = [e for r in rows for e in r.edges]
    if edges:
        conn.execute(st.insert_edges, edges)
    contributions = [c for r in rows for c in r.contributions]
    if contributions:
        conn.execute(st.insert_contributions, contributions)
    wanted = fields_of(rows, known_fields)
    if wanted:
        conn.execute(st.insert_fields, wanted)


def fields_of(rows: Sequence[InstanceRows], known: set[FieldRow] | None) -> list[dict[str, str]]:
    """The `fields` rows of `rows` not in `known` (the catalog ignores the ones it has)."""
    wanted: set[FieldRow] = set()
    for r in rows:
        wanted |= r.fields
    if known is not None:
        wanted -= known
    return [
        {"project": p, "cell": c, "origin": o, "name": n, "kind": k}
        for p, c, o, n, k in sorted(wanted)
    ]


class IndexWriter:
    """Writes one store's index at `url` (resolved; see `settings.index_url`)."""

    def __init__(self, url: str, root: str) -> None:
        self.url = url
        self.root = root
        self._known: set[FieldRow] = set()  # in the catalog already: not inserted again
        self._sqlite = sqlite_writes.Writes(url) if url.startswith("sqlite") else None
        self._failed_at: float | None = None
        self._lock = threading.Lock()
        self._prepared_pid: int | None = None
        self._open_error: Exception | None = None  # prepare_quietly's, for the next record
        self._prepare_lock = threading.Lock()

    @property
    def shown_url(self) -> str:
        """The URL without its password."""
        return settings.redact_url(self.url)

    def refresh(self, project: str, cell: str, key: str, *, fresh: bool = False) -> None:
        """Make the index rows of one instance what its files say (one transaction); `fresh`:
        it was just committed for the first time (nothing of it to delete first).

        Raises:
            RecordIndexError: the index cannot be reached or has another schema version.
            sqlalchemy.exc.SQLAlchemyError: the write failed.
        """
        rows = read_instance(self.root, project, cell, key)
        if rows is not None and self._sqlite is not None:
            with self._lock:
                known = set(self._known)
            self._sqlite.write(rows, replace=not fresh, known_fields=known)
        else:
            with connect(self.url, write=True) as conn:
                if rows is None:
                    self.delete(conn, [key])
                    return
                write_rows(conn, [rows], replace=not fresh)
        with self._lock:
            self._known |= rows.fields
        warn_if_behind(self.url, self.root, besides=key)

    def delete(self, conn: Connection, keys: Iterable[str]) -> None:
        """Delete the rows of `keys` (inside `conn`'s transaction)."""
        st = statements(conn)
        params = [{"k": k} for k in keys]
        if params:
            conn.execute(st.delete_edges, params)
            conn.execute(st.delete_contributions, params)
            conn.execute(st.delete_instance, params)

    def prepare_quietly(self) -> None:
        """Open (and create) the index before this process commits its first result, never
        raising; once per process.

        Creating it lazily at the first commit would let the creating thread's check "does
        the store already hold results?" see what other threads of this run had just
        committed (and would index themselves), and warn about a fresh store. Threads wait
        here until the index exists, so whatever the check finds was stored before.
        """
        pid = os.getpid()
        if self._prepared_pid == pid:
            return
        with self._prepare_lock:
            if self._prepared_pid == pid or self._skipping():
                return
            try:
                with connect(self.url):
                    pass
            except Exception as exc:  # the commit's index write reports it (one timeout)
                self._open_error = exc
                return
            warn_if_behind(self.url, self.root)
            self._prepared_pid = pid

    def _skipping(self) -> bool:
        return self._failed_at is not None and time.monotonic() - self._failed_at < RETRY_AFTER_S

    def record_quietly(self, project: str, cell: str, key: str, *, fresh: bool = False) -> None:
        """`refresh`, never raising: the result is committed whatever the index says."""
        if self._skipping():
            return
        exc, self._open_error = self._open_error, None
        if exc is None:  # else opening it just failed: a dead server costs one timeout
            try:
                self.refresh(project, cell, key, fresh=fresh)
            except Exception as failed:  # the store's files are the truth; the index is rebuildable
                exc = failed
        if exc is not None:
            self._failed_at = time.monotonic()
            log.warning(
                "%s.%s@%s is stored, but the SQL index %s could not be written (%s: %s); "
                "results committed while it fails are missing from the index until "
                "`further-dagster index rebuild --root %s` (further index writes of this "
                "process are skipped for %.0f s)",
                project,
                cell,
                key[:8],
                self.shown_url,
                type(exc).__name__,
                _short(exc),
                self.root,
                RETRY_AFTER_S,
            )
        else:
            self._failed_at = None


def warn_if_behind(url: str, root: str, *, besides: str | None = None) -> None:
    """If this process just created the index at `url` while the store already held results
    (other than `besides`, the one being committed), say that they are not in it and how to
    add them. Costs a bounded directory scan, once per created index."""
    if not created_here(url):
        return
    for inst in iter_instance_dirs(root, None, None):
        if inst.name != besides and (inst / layout.RESULT_NAME).is_dir():
            log.warning(
                "created a new SQL index %s for the store %s, which already holds results: "
                "they are not in the index until `further-dagster index rebuild --root %s`",
                settings.redact_url(url),
                root,
                root,
            )
            return


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else ""


_writers: dict[tuple[str, str], IndexWriter] = {}
_writers_lock = threading.Lock()


def writer_for(url: str, root: str) -> IndexWriter:
    """The process's writer for (url, root): its caches live as long as the process."""
    slot = (url, root)
    found = _writers.get(slot)
    if found is None:
        with _writers_lock:
            found = _writers.setdefault(slot, IndexWriter(url, root))
    return found


def forget_writers() -> None:
    """Drop every writer's caches (tests; after a rebuild from another process)."""
    with _writers_lock:
        _writers.clear()


__all__ = ["IndexWriter", "forget_writers", "warn_if_behind", "write_rows", "writer_for"]
