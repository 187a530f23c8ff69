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


def _install() -> None:
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    from further_dagster.dagster import _compat

    event_storage, run_storage, index_shard, busy_timeout_s = _compat.sqlite_storages()
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
            self._initdb(engine)
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
    run_storage.connect = connect


__all__ = [
    "EventBatch",
    "event_batch",
    "install_sqlite_engine_cache",
    "suspend_event_batch",
    "suspended_event_batch",
]
