"""The DASK backend: missing instances as tasks on a Dask cluster.

Which cluster: inside a Dask worker (a Dagster step run by dagster-dask's executor), the
worker's own cluster, through `distributed.worker_client` (the step's thread secedes while it
waits, so a one-thread worker does not deadlock); else the scheduler at `FURTHER_DASK_ADDRESS`;
else a `LocalCluster` of worker processes started for this call and closed after it.
Each task runs `compute.ensure` for one instance against the shared store (pickled with its
settings).
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import os
from collections.abc import Sequence
from typing import Any

from further_dagster.core.instances import Instance
from further_dagster.settings import dask_address
from further_dagster.store import Outcome, Store

__all__ = ["DaskPool", "ensure_on_worker"]


def ensure_on_worker(store: Store, inst: Instance) -> Outcome:
    """What one Dask task runs."""
    from further_dagster.engine.compute import ensure

    return ensure(store, inst)


class DaskPool(cf.Executor):
    """A `concurrent.futures` facade over a Dask client (see the module docstring)."""

    def __init__(self, store: Store, workers: int) -> None:
        import distributed

        self.store = store
        self._remote: list[Any] = []
        self._stack = contextlib.ExitStack()
        try:
            distributed.get_worker()
            in_worker = True
        except ValueError:
            in_worker = False
        if in_worker:
            self.client = self._stack.enter_context(distributed.worker_client())
        elif (address := dask_address()) is not None:
            self.client = self._stack.enter_context(distributed.Client(address))
        else:
            cluster = self._stack.enter_context(
                distributed.LocalCluster(
                    n_workers=max(1, min(workers, os.cpu_count() or 1)),
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=None,
                )
            )
            self.client = self._stack.enter_context(distributed.Client(cluster))

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> cf.Future[Any]:
        future: cf.Future[Any] = cf.Future()
        remote = self.client.submit(fn, *args, pure=False, **kwargs)
        self._remote.append(remote)

        def transfer(done: Any) -> None:
            if future.done():
                return
            try:
                future.set_result(done.result())
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting caller
                future.set_exception(exc)

        remote.add_done_callback(transfer)
        return future

    def submit_many(self, insts: Sequence[Instance]) -> list[cf.Future[Outcome]]:
        return [self.submit(ensure_on_worker, self.store, inst) for inst in insts]

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        if cancel_futures:
            with contextlib.suppress(Exception):
                self.client.cancel([f for f in self._remote if not f.done()])
        self._stack.close()

    def abort(self) -> None:
        """Cancel every task that has not finished and close the client (Ctrl-C)."""
        self.shutdown(wait=False, cancel_futures=True)
