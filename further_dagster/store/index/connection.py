"""One SQLAlchemy engine per index URL per process, and the schema check.

An engine (and its connection pool) is created on first use and reused for every commit of
the process, so a commit costs one transaction, not a connection. A forked child (a
LOCAL_PROCESSES worker) builds its own: a pool must not be shared across a fork.

SQLite: WAL journal (readers never block the writer), `synchronous=OFF` (no fsync, not even at
a WAL checkpoint: the index is derived from the store's files, which are the durable truth; an
index a power loss damaged is deleted and rebuilt; with `FURTHER_FSYNC=1` it is `NORMAL`, which
fsyncs at checkpoints), a 30 s busy timeout, and writes begin with
`BEGIN IMMEDIATE`, so parallel processes queue for the write lock instead of failing with
"database is locked". WAL needs shared memory between the processes: on a network filesystem
across hosts (Slurm nodes) use PostgreSQL (`FURTHER_INDEX_URL=postgresql://...`).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

from further_dagster import settings
from further_dagster.errors import IndexConnectionError, IndexSchemaError
from further_dagster.store.index import schema

BUSY_TIMEOUT_MS = 30_000
CONNECT_TIMEOUT_S = 10

_lock = threading.Lock()
_engines: dict[str, Engine] = {}
_checked: set[str] = set()
_created: set[str] = set()  # URLs whose schema this process created (see `created_here`)
_pid = os.getpid()

_WRITE = "further_write"


def connection_fix(url: str) -> str:
    """What to do when `url` cannot be used, for messages."""
    if url.startswith("sqlite"):
        return (
            "make the file's directory writable (or free disk space), point FURTHER_INDEX_URL "
            "/ index_url at a writable sqlite:////path, or set it to none for no index"
        )
    return (
        "check that the PostgreSQL server runs and that host, port, user, password and "
        "database in FURTHER_INDEX_URL / index_url are right (the database must exist), or "
        "unset it for the SQLite default <root>/.index.sqlite"
    )


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # we emit BEGIN ourselves (see `_begin`)
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute(f"PRAGMA synchronous = {'NORMAL' if settings.fsync() else 'OFF'}")
    finally:
        cursor.close()


def _sqlite_begin(conn: Connection) -> None:
    immediate = conn.get_execution_options().get(_WRITE, False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _create(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[1] if "///" in url else ""
        if path and path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        engine = sa.create_engine(
            url, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000, "check_same_thread": False}
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    return sa.create_engine(
        url, connect_args={"connect_timeout": CONNECT_TIMEOUT_S}, pool_pre_ping=True
    )


def engine_for(url: str) -> Engine:
    """The process's engine for `url` (created on first use; a forked child makes its own)."""
    global _pid
    with _lock:
        if os.getpid() != _pid:
            for engine in _engines.values():
                engine.dispose(close=False)  # the parent's connections are the parent's
            _engines.clear()
            _checked.clear()
            _pid = os.getpid()
        found = _engines.get(url)
        if found is None:
            try:
                found = _engines[url] = _create(url)
            except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError, OSError) as exc:
                raise IndexConnectionError(
                    f"cannot open the index {settings.redact_url(url)}: {exc}. Fix: "
                    f"{connection_fix(url)}"
                ) from exc
        return found


def dispose(url: str) -> None:
    """Close and forget the engine of `url` (tests; after a rebuild replaced a SQLite file)."""
    with _lock:
        engine = _engines.pop(url, None)
        _checked.discard(url)
    if engine is not None:
        engine.dispose()


@contextlib.contextmanager
def connect(url: str, *, write: bool = False, check: bool = True) -> Iterator[Connection]:
    """A connection in one transaction (committed on success); `write=True` takes SQLite's
    write lock at BEGIN. The schema is checked (and created) once per process and URL.

    Raises:
        IndexConnectionError: the URL cannot be connected to (the URL without password and the
            fix).
        IndexSchemaError: the index has another schema version.
    """
    engine = engine_for(url)
    try:
        conn = engine.connect()
    except sa.exc.DBAPIError as exc:
        raise IndexConnectionError(
            f"cannot connect to the index {settings.redact_url(url)}: "
            f"{_first_line(exc.orig)}. Fix: {connection_fix(url)}"
        ) from exc
    with conn:
        if check and url not in _checked:
            ensure_schema(conn, url)
            _checked.add(url)
        if write:
            conn = conn.execution_options(**{_WRITE: True})
        with conn.begin():
            yield conn


def _first_line(exc: BaseException | None) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def read_version(conn: Connection) -> int | None:
    """The schema version of the index behind `conn`, or None if it has no schema yet."""
    if not sa.inspect(conn).has_table(schema.schema_table.name):
        return None
    row = conn.execute(sa.select(sa.func.max(schema.schema_table.c.version))).scalar()
    return None if row is None else int(row)


def ensure_schema(conn: Connection, url: str) -> None:
    """Create the schema if the index is empty; refuse another version."""
    with conn.begin():
        version = read_version(conn)
    if version == schema.SCHEMA_VERSION:
        return
    where = settings.redact_url(url)
    if version is not None and version > schema.SCHEMA_VERSION:
        raise IndexSchemaError(
            f"the index {where} has schema version {version}, written by a newer "
            f"further_dagster; this one knows version {schema.SCHEMA_VERSION}. Upgrade "
            f"further_dagster (pip install -U further_dagster), or rebuild the index for this "
            f"version from the store with `further-dagster index rebuild` (it replaces the index)"
        )
    if version is not None:
        raise IndexSchemaError(
            f"the index {where} has schema version {version}, older than this "
            f"further_dagster's {schema.SCHEMA_VERSION}: rebuild it from the store with "
            f"`further-dagster index rebuild`"
        )
    if create_schema(conn):
        _created.add(url)


def created_here(url: str) -> bool:
    """True once if this process created the index at `url` (so results stored before may
    be missing from it); False afterwards."""
    with _lock:
        if url in _created:
            _created.discard(url)
            return True
    return False


def create_schema(conn: Connection) -> bool:
    """Create every table and the `cells` view, and write the version row (idempotent: a
    process racing another to create them checks again). True if this call created them."""
    conn.execution_options(**{_WRITE: True})  # SQLite: creators queue for the write lock
    try:
        with conn.begin():
            if conn.dialect.name == "postgresql":  # serialise concurrent creators
                conn.exec_driver_sql("SELECT pg_advisory_xact_lock(1178943)")
            if read_version(conn) is not None:
                return False
            create_tables(conn)
            return True
    except sa.exc.DBAPIError:
        with conn.begin():
            if read_version(conn) == schema.SCHEMA_VERSION:
                return False  # another process created it meanwhile
        raise
    finally:
        conn.execution_options(**{_WRITE: False})


def create_tables(conn: Connection) -> None:
    """Create the tables, the `cells` view and the version row, in `conn`'s transaction."""
    from further_dagster.store.provenance import package_versions

    schema.metadata.create_all(conn)
    conn.exec_driver_sql(f"DROP VIEW IF EXISTS {schema.CELLS_VIEW}")
    conn.exec_driver_sql(schema.CELLS_VIEW_SQL)
    version = package_versions(("further_dagster",)).get("further_dagster", "unknown")
    conn.execute(
        sa.insert(schema.schema_table).values(
            version=schema.SCHEMA_VERSION, created_by=f"further_dagster {version}"
        )
    )


__all__ = [
    "connect",
    "connection_fix",
    "create_schema",
    "create_tables",
    "created_here",
    "dispose",
    "engine_for",
    "ensure_schema",
    "read_version",
]
