"""Dagster's SQLite storages made cheap to write: one engine per file, batches in one transaction.

Dagster's SQLite event log and run storage build a new SQLAlchemy engine for every connection
(and dispose of it after), which costs more than the insert it serves: a step's handful of
events, and every cached step's recorded materialization, pay it again and again. An engine
with NullPool holds no connection, so keeping one per database file changes nothing else:
every `connect()` still opens (and closes) its own sqlite3 connection, under Dagster's lock.
The bodies below are Dagster 1.13.27's, with the engine kept.

And each event is its own transaction per shard (the run's file, then the index file, then the
asset-check tables), and a commit (an fsync) costs more than the insert: on a busy disk tens of
milliseconds. Inside `event_batch` every connection a thread asks of one event storage is that
shard's one open transaction, committed when the batch ends (or `commit`s): Dagster's own
`store_event` runs unchanged (its reads see the batch's writes, so a storage id is known as soon
as its event is written), only the commits are shared. Dagster hands its own batches (the
planned events written when a run is created) to `store_event_batch` when
`DAGSTER_EVENT_BATCH_SIZE` is set; SQLite's is one `event_batch`.

And per run and per event, work whose answer does not change: a new run's shard is a copy of
an empty one Dagster made earlier (`_shard_from_template`; Dagster's init commits each of its
DDL statements), a stamped shard is not initialized again (`_stamped`), the `asset_keys`
columns are reflected once, an asset's row is updated first (Dagster inserts first and updates
on the failure). A batch remembers the materializations it stored (`EventBatch.materialized`):
what the skip-cached executor would read back for the input pointers and check targets of the
cached steps after them.

A batch holds Dagster's lock of the storage (other threads of the process wait) and SQLite's
write lock (other processes wait, up to Dagster's 30 s busy timeout), so whoever holds one
commits it often and lets go of it before waiting or computing (`EventBatch.suspend`).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

_installed = False
_BATCH_SIZE_ENV = "DAGSTER_EVENT_BATCH_SIZE"
_BATCH_SIZE = "1000"  # Dagster flushes a batch at its end or at this many events
_batch = threading.local()  # .open: this thread's active EventBatch


def install_sqlite_engine_cache() -> None:
    """One SQLAlchemy engine per SQLite database file for Dagster's event-log and run storage
    (instead of one per connection), and batches in one transaction per shard. Installed when a
    run starts, or when dagster/_compat.py is imported with Dagster's SQLite storages already
    loaded: importing them just to patch them would cost every code-location load (the
    webserver's, the daemon's) about half a second."""
    global _installed
    if not _installed:
        _installed = True
        _install()
        # Dagster batches only when asked to; a user's own setting wins
        os.environ.setdefault(_BATCH_SIZE_ENV, _BATCH_SIZE)


class EventBatch:
    """The open batch of one thread on one SQLite event storage (see `event_batch`)."""

    def __init__(self, storage: Any) -> None:
        self.storage = storage
        # asset key -> (index-shard storage id, event) of the latest materialization stored in
        # this batch: what Dagster's "latest materialization" read returns for it as long as
        # the batch has not let go of the storage (`suspend`: others may write meanwhile)
        self.materialized: dict[Any, tuple[int, Any]] = {}
        self.conns: dict[str, Any] = {}
        self.stack = ExitStack()
        self.since = time.perf_counter()
        self.active = False

    def _activate(self) -> None:
        self.storage._db_lock.acquire()
        self.active = True
        self.since = time.perf_counter()
        _batch.open = self

    def _close(self) -> None:
        try:
            self.stack.close()  # commits each shard's transaction, closes its connection
        finally:
            self.conns, self.stack = {}, ExitStack()
            if self.active:
                self.active = False
                _batch.open = None
                self.storage._db_lock.release()

    def commit(self, *, older_than: float = 0.0) -> None:
        """Commit what the batch wrote (if it began `older_than` seconds ago or more) and go on
        batching: what is committed is what other processes (the UI) see."""
        if self.active and time.perf_counter() - self.since >= older_than:
            self._close()
            self._activate()

    def suspend(self) -> None:
        """Commit and let go of the storage (before this thread waits or computes): until
        `resume`, this thread's events are stored one by one, as without a batch."""
        if self.active:
            self._close()

    def resume(self) -> None:
        if not self.active:
            self._activate()


@contextmanager
def event_batch(instance: Any) -> Iterator[EventBatch | None]:
    """Every event this thread stores in `instance` (a DagsterInstance or an event storage)
    meanwhile is written in one transaction per SQLite shard, committed at the end (also when
    the block raises: the events were logged already). None, and nothing changes, for other
    storages (PostgreSQL: one transaction per event, as before), before the patches are
    installed, and inside a batch already."""
    storage = getattr(instance, "event_log_storage", instance)
    if not _installed or getattr(_batch, "open", None) is not None:
        yield None
        return
    from further_dagster.dagster import _compat

    if not isinstance(storage, _compat.sqlite_storages()[0]):
        yield None
        return
    batch = EventBatch(storage)
    batch._activate()
    try:
        yield batch
    finally:
        batch._close()


@contextmanager
def suspended_event_batch() -> Iterator[None]:
    """This thread's open batch (if any) committed and let go of for the block (a wait),
    batching again after it."""
    batch: EventBatch | None = getattr(_batch, "open", None)
    if batch is None:
        yield
        return
    batch.suspend()
    try:
        yield
    finally:
        batch.resume()


def suspend_event_batch() -> None:
    """Commit this thread's open batch (if any) and let go of it until its owner resumes it
    (a step that computes in its body: its events are stored one by one meanwhile)."""
    batch: EventBatch | None = getattr(_batch, "open", None)
    if batch is not None:
        batch.suspend()


_SQLITE_HEADER = b"SQLite format 3\x00"


def _stamped(storage: Any, shard: str, engine: Any) -> bool:
    """Whether the shard's database exists with an alembic revision: then Dagster's init does
    nothing (it creates tables only where there is no revision; migrating is `dagster instance
    migrate`'s job), but first loads every alembic migration script to compare revisions, a
    tenth of a second or more each process."""
    if not os.path.exists(storage.path_for_shard(shard)):
        return False  # (connecting would create it)
    from sqlalchemy.exc import SQLAlchemyError

    try:
        with engine.connect() as conn:
            rows = conn.exec_driver_sql("SELECT version_num FROM alembic_version").fetchall()
    except SQLAlchemyError:
        return False  # no such table yet: Dagster's init decides
    return len(rows) == 1 and bool(rows[0][0])


def _template_path(storage: Any, version: str) -> str:
    # not "*.db": Dagster takes every *.db file of the directory for a run's shard
    return os.path.join(storage._base_dir, f".further-run-shard-{version}.sqlite")


def _copy_sqlite(src: str, dst: str, *, link: bool) -> bool:
    """Copy an SQLite file whole through a temporary file (fsynced), into place by a hard link
    (`link`: never over a file another process made meanwhile) or a rename. False when `src`
    is missing or not an SQLite file, or the copy fails."""
    tmp = f"{dst}.{os.getpid()}.{threading.get_ident()}.tmp"
    try:
        with open(src, "rb") as fh:
            data = fh.read()
        if not data.startswith(_SQLITE_HEADER):
            return False
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        (os.link if link else os.replace)(tmp, dst)
        return True
    except OSError:
        return False
    finally:
        try:
            os.unlink(tmp)
        except OSError:
            pass  # renamed into place, or never written


def _shard_from_template(storage: Any, shard: str, version: str) -> bool:
    """Create a new run's event-log shard as a copy of an empty one of the same Dagster version
    (its tables, WAL mode and alembic stamp), instead of Dagster's init: its twenty DDL
    statements each commit (an fsync) and it loads every alembic migration script, about a
    third of a second a run, for a file that is the same every time. False (Dagster inits it)
    when there is no template yet, or the shard's file exists (another process made it)."""
    target = storage.path_for_shard(shard)
    if os.path.exists(target):
        return False
    return _copy_sqlite(_template_path(storage, version), target, link=True)


def _save_template(storage: Any, shard: str, version: str) -> None:
    """Keep a copy of the run shard Dagster just initialized (still empty: no event is written
    before its first connection), for `_shard_from_template`."""
    template = _template_path(storage, version)
    path = storage.path_for_shard(shard)
    if os.path.exists(template) or os.path.exists(path + "-wal"):
        return  # (a -wal file: another connection is open on it, the file alone may not do)
    _copy_sqlite(path, template, link=False)


def _install() -> None:
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    from further_dagster.dagster import _compat

    event_storage, run_storage, index_shard, busy_timeout_s = _compat.sqlite_storages()
    table = _compat.asset_key_table()
    version = _compat.dagster_version()
    engines: dict[tuple[str, bool], Any] = {}

    def engine_for(conn_string: str, busy_timeout: bool) -> Any:
        found = engines.get((conn_string, busy_timeout))
        if found is None:
            args = {"timeout": busy_timeout_s} if busy_timeout else {}
            found = create_engine(conn_string, poolclass=NullPool, connect_args=args)
            engines[(conn_string, busy_timeout)] = found
        return found

    def _open(self: Any, shard: str) -> Any:
        engine = engine_for(self.conn_string_for_shard(shard), True)
        if shard not in self._initialized_dbs:
            if _stamped(self, shard, engine):
                pass  # Dagster's init would only load alembic's scripts to find that out
            elif shard == index_shard or not _shard_from_template(self, shard, version):
                self._initdb(engine)
                if shard != index_shard:
                    _save_template(self, shard, version)
            self._initialized_dbs.add(shard)
        return engine

    @contextmanager
    def _connect(self: Any, shard: str) -> Any:
        batch = getattr(_batch, "open", None)
        if batch is not None and batch.storage is self:  # the batch holds the lock already
            conns = batch.conns
            if shard not in conns:
                conn = batch.stack.enter_context(_open(self, shard).connect())
                batch.stack.enter_context(conn.begin())
                conns[shard] = conn
            yield conns[shard]
            return
        with self._db_lock:
            with _open(self, shard).connect() as conn:
                with conn.begin():
                    yield conn

    def store_event_batch(self: Any, events: Sequence[Any]) -> None:
        with event_batch(self):
            for event in events:
                self.store_event(event)

    dagster_store_asset_event = event_storage._store_asset_event
    index_cols: set[str] = set()

    def _has_asset_key_index_cols_on_connection(self: Any, conn: Any) -> bool:
        # reflected (a PRAGMA and SQLAlchemy's inspector) for every asset event; the columns,
        # once there, stay: only a yes is remembered
        key = self.conn_string_for_shard(index_shard)
        if key in index_cols:
            return True
        found = bool(self._has_asset_key_col_on_connection(conn, "last_materialization_timestamp"))
        if found:
            index_cols.add(key)
        return found

    def _store_asset_event(self: Any, conn: Any, event: Any, event_id: int) -> None:
        # Dagster's body, but an update first: Dagster inserts first and updates when the
        # insert fails, and the failure (SQLAlchemy wrapping SQLite's IntegrityError) costs
        # more than the write; an asset's row exists from its first event on
        dagster_event = event.dagster_event
        key = dagster_event.asset_key if dagster_event is not None else None
        if key is None:
            return
        values = self._get_asset_entry_values(
            event, event_id, self._has_asset_key_index_cols_on_connection(conn)
        )
        if not values:
            return
        where = table.c.asset_key == key.to_string()
        if conn.execute(table.update().values(**values).where(where)).rowcount == 0:
            dagster_store_asset_event(self, conn, event, event_id)  # a new asset (or a race)
        batch = getattr(_batch, "open", None)
        if batch is not None and batch.storage is self and dagster_event.is_step_materialization:
            batch.materialized[key] = (event_id, event)

    dagster_has_table = event_storage.has_table
    tables: set[tuple[str, str]] = set()

    def has_table(self: Any, table_name: str) -> bool:
        # asked for every asset event (a new engine and connection each time); a table, once
        # there, stays: only a yes is remembered
        key = (self.conn_string_for_shard(index_shard), table_name)
        if key in tables:
            return True
        found = bool(dagster_has_table(self, table_name))
        if found:
            tables.add(key)
        return found

    @contextmanager
    def connect(self: Any) -> Any:
        with engine_for(self._conn_string, False).connect() as conn:
            with conn.begin():
                yield conn

    event_storage._connect = _connect
    event_storage.store_event_batch = store_event_batch
    event_storage.has_table = has_table
    event_storage._has_asset_key_index_cols_on_connection = _has_asset_key_index_cols_on_connection
    event_storage._store_asset_event = _store_asset_event
    run_storage.connect = connect


__all__ = [
    "EventBatch",
    "event_batch",
    "install_sqlite_engine_cache",
    "suspend_event_batch",
    "suspended_event_batch",
]
