"""The local backends: the calling thread, a thread pool, a pool of spawned processes."""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
from collections.abc import Sequence

from further_dagster.core.instances import Instance
from further_dagster.engine.compute import ContributionCache, ensure
from further_dagster.store import Outcome, Store


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


class ThreadBackend:
    """Independent instances on a thread pool; loaded inputs are shared through `cache`."""

    def __init__(self, store: Store, cache: ContributionCache, workers: int) -> None:
        self.store = store
        self.cache = cache
        self.pool = cf.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="further")

    def submit_many(self, insts: Sequence[Instance]) -> list[cf.Future[Outcome]]:
        return [self.pool.submit(ensure, self.store, inst, self.cache) for inst in insts]

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self.pool.shutdown(wait=wait, cancel_futures=cancel_futures)


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


__all__ = ["InlineBackend", "ProcessBackend", "ThreadBackend", "ensure_in_child"]
