"""The local backends: the calling thread, a thread pool, a pool of spawned processes.

Each can be *aborted* (the caller pressed Ctrl-C): what has not started is cancelled, and what
runs is stopped or abandoned without waiting for it, so that the caller gets its
`KeyboardInterrupt` back at once. Processes are terminated (SIGTERM: each records its attempt
as `interrupted` and releases its lease before it dies). Threads cannot be killed: their
attempts are recorded as `interrupted` and their leases released through the store, and what
their make() returns later is discarded; the pool's threads are daemon threads, so an abandoned
make() never keeps the interpreter from exiting.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import multiprocessing
import queue
import threading
from collections.abc import Callable, Sequence
from typing import Any

from further_dagster.core.instances import Instance
from further_dagster.engine.compute import ContributionCache, ensure
from further_dagster.store import Outcome, Store

log = logging.getLogger("further")

ABANDONED = "the caller pressed Ctrl-C (KeyboardInterrupt): this make() thread was abandoned"


class InlineBackend:
    """Runs each instance on the calling thread, right away: its future is already done.

    Only FurtherErrors are expected from a computation; anything else (KeyboardInterrupt
    included) is carried by the future too and re-raised by the scheduler when it settles it.
    """

    def __init__(self, store: Store, cache: ContributionCache) -> None:
        self.store = store
        self.cache = cache

    def submit_many(self, insts: Sequence[Instance]) -> list[cf.Future[Outcome]]:
        futures = []
        for inst in insts:
            future: cf.Future[Outcome] = cf.Future()
            try:
                future.set_result(ensure(self.store, inst, self.cache))
            except BaseException as exc:  # noqa: BLE001 - settled (and re-raised) by the scheduler
                future.set_exception(exc)
            futures.append(future)
        return futures

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        return None

    def abort(self) -> None:
        return None


_WorkItem = tuple[cf.Future[Any], Callable[..., Any], tuple[Any, ...]]


class DaemonThreadPool:
    """A small thread pool of daemon threads (`ThreadPoolExecutor` joins its threads at exit,
    so one abandoned make() would keep a script that was interrupted from exiting)."""

    def __init__(self, max_workers: int, thread_name_prefix: str) -> None:
        self._max = max(1, max_workers)
        self._prefix = thread_name_prefix
        self._queue: queue.SimpleQueue[_WorkItem | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._idle = threading.Semaphore(0)
        self._lock = threading.Lock()
        self._closed = False

    def submit(self, fn: Callable[..., Any], /, *args: Any) -> cf.Future[Any]:
        future: cf.Future[Any] = cf.Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("cannot submit to a pool that was shut down")
            self._queue.put((future, fn, args))
            if not self._idle.acquire(blocking=False) and len(self._threads) < self._max:
                thread = threading.Thread(
                    target=self._work, name=f"{self._prefix}_{len(self._threads)}", daemon=True
                )
                self._threads.append(thread)
                thread.start()
        return future

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            future, fn, args = item
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn(*args))
                except BaseException as exc:  # noqa: BLE001 - handed to whoever waits on it
                    future.set_exception(exc)
            del item, future
            self._idle.release()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._closed = True
            if cancel_futures:
                while True:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is not None:
                        item[0].cancel()
            for _ in self._threads:
                self._queue.put(None)
            threads = list(self._threads)
        if wait:
            for thread in threads:
                thread.join()


class ThreadBackend:
    """Independent instances on a thread pool; loaded inputs are shared through `cache`."""

    def __init__(self, store: Store, cache: ContributionCache, workers: int) -> None:
        self.store = store
        self.cache = cache
        self.pool = DaemonThreadPool(max_workers=workers, thread_name_prefix="further")
        self.cancelled = threading.Event()
        self._submitted: list[tuple[cf.Future[Outcome], Instance]] = []

    def submit_many(self, insts: Sequence[Instance]) -> list[cf.Future[Outcome]]:
        futures: list[cf.Future[Outcome]] = []
        for inst in insts:
            future = self.pool.submit(_ensure, self.store, inst, self.cache, self.cancelled)
            self._submitted.append((future, inst))
            futures.append(future)
        return futures

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self.pool.shutdown(wait=wait, cancel_futures=cancel_futures)

    def abort(self) -> None:
        """Cancel what has not started; record running attempts as interrupted and release
        their leases; do not wait for their threads."""
        self.cancelled.set()
        for future, inst in self._submitted:
            if future.done() or future.cancel():
                continue
            cell = inst.cell
            self.store.interrupt(cell.project.name, cell.name, inst.key, ABANDONED)
        self.pool.shutdown(wait=False, cancel_futures=True)


def _ensure(
    store: Store, inst: Instance, cache: ContributionCache, cancelled: threading.Event
) -> Outcome:
    return ensure(store, inst, cache, cancelled=cancelled)


def ensure_in_child(store: Store, inst: Instance) -> Outcome:
    """What a child process runs: the store travels pickled, with its settings."""
    return ensure(store, inst)


class ProcessBackend:
    """Independent instances in spawned processes (no fork: threads and locks stay sane)."""

    def __init__(self, store: Store, workers: int) -> None:
        self.store = store
        self.pool = cf.ProcessPoolExecutor(
            max_workers=workers, mp_context=multiprocessing.get_context("spawn")
        )

    def submit_many(self, insts: Sequence[Instance]) -> list[cf.Future[Outcome]]:
        return [self.pool.submit(ensure_in_child, self.store, inst) for inst in insts]

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self.pool.shutdown(wait=wait, cancel_futures=cancel_futures)

    def abort(self) -> None:
        """Terminate the worker processes (each records its attempt as interrupted and releases
        its lease on SIGTERM) and drop what has not started; do not wait."""
        # concurrent.futures offers no public way to stop running work; its process table is
        # the one handle on the workers (`terminate_workers()` arrives in Python 3.14).
        processes = dict(getattr(self.pool, "_processes", None) or {})
        for process in processes.values():
            try:
                process.terminate()
            except (OSError, ValueError, AttributeError) as exc:  # already gone
                log.debug("could not terminate %s: %s", process, exc)
        self.pool.shutdown(wait=False, cancel_futures=True)


__all__ = [
    "DaemonThreadPool",
    "InlineBackend",
    "ProcessBackend",
    "ThreadBackend",
    "ensure_in_child",
]
