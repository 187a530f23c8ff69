"""The DASK backend: missing instances as tasks on a Dask cluster.

Which cluster: inside a Dask worker (a Dagster step run by dagster-dask's executor), the
worker's own cluster, through `distributed.worker_client` (the step's thread secedes while it
waits, so a one-thread worker does not deadlock); else the scheduler at `FURTHER_DASK_ADDRESS`;
else a `LocalCluster` of worker processes started for this call and closed after it.
Each task runs `compute.ensure` for one instance against the shared store (pickled with its
settings).

DASK_STATIC_DAG (`graph_threshold` set): a static chapter goes to the scheduler as ONE graph
(`Client.get(..., sync=False)`): one task per instance whose arguments are its dependencies'
tasks (or the futures of instances already in flight). The scheduler then starts each task as
soon as its dependencies end, without a round trip through this process per instance, and one
thread gathers the results as they end. A task never raises a cell's failure into the graph:
it returns it, so Dask keeps running every branch that does not depend on it, and a task whose
dependency failed returns "blocked" without running make(). Every task carries its instance
`thin` (its dependencies without theirs): a task deep in a chain would otherwise carry the
whole chain.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import logging
import os
import threading
import uuid
from collections.abc import Sequence
from typing import Any

from further_dagster.core.instances import Instance
from further_dagster.engine.backends import Blocked, thin
from further_dagster.errors import FurtherError
from further_dagster.settings import dask_address
from further_dagster.store import Outcome, Store

__all__ = ["DaskPool", "ensure_in_graph", "ensure_on_worker"]

_OK, _FAILED, _BLOCKED = "ok", "failed", "blocked"
log = logging.getLogger("further")


def ensure_on_worker(store: Store, inst: Instance) -> Outcome:
    """What one Dask task runs."""
    from further_dagster.engine.compute import ensure

    return ensure(store, inst)


class _Opaque:
    """An argument Dask must not look into: tokenizing the graph would otherwise walk every
    Instance and its upstream (deep recursion on long chains, and slow)."""

    __slots__ = ("token", "value")

    def __init__(self, value: Any, token: str) -> None:
        self.value, self.token = value, token

    def __dask_tokenize__(self) -> str:
        return self.token


def ensure_in_graph(store: _Opaque, inst: _Opaque, *deps: Any) -> tuple[str, Any]:
    """What one task of a static graph runs: (ok, Outcome), (failed, the FurtherError), or
    (blocked, None) when a dependency in the graph did not succeed. `deps` are the values of
    its dependencies' tasks: status pairs, or the Outcome of an instance submitted alone."""
    if any(isinstance(d, tuple) and d[0] != _OK for d in deps):
        return (_BLOCKED, None)
    from further_dagster.engine.compute import ensure

    try:
        return (_OK, ensure(store.value, inst.value))
    except FurtherError as exc:
        return (_FAILED, exc)


class DaskPool(cf.Executor):
    """A `concurrent.futures` facade over a Dask client (see the module docstring)."""

    def __init__(self, store: Store, workers: int, *, graph_threshold: int | None = None) -> None:
        import distributed

        self.store = store
        self.graph_threshold = graph_threshold
        self.graphs: list[int] = []  # instances per graph submitted (one entry per graph)
        self._token = uuid.uuid4().hex[:8]
        self._by_key: dict[str, Any] = {}  # instance key -> its Dask future (graph or not)
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
        remote = self.client.submit(fn, *args, pure=False, **kwargs)
        self._remote.append(remote)
        return _transfer(remote)

    def submit_many(self, insts: Sequence[Instance]) -> list[cf.Future[Outcome]]:
        futures = []
        for inst in insts:
            remote = self.client.submit(ensure_on_worker, self.store, thin(inst), pure=False)
            self._remote.append(remote)
            self._by_key[inst.key] = remote
            futures.append(_transfer(remote))
        return futures

    def in_flight(self, key: str) -> bool:
        remote = self._by_key.get(key)
        return remote is not None and remote.status != "error"

    def submit_graph(self, insts: Sequence[Instance]) -> list[cf.Future[Outcome]]:
        """The chapter as one Dask graph (see the module docstring)."""
        # the store goes into every task, not in a key of its own: tasks depending on one data
        # key would all be placed on the worker that holds it
        store = _Opaque(self.store, f"further-store-{self._token}")
        names = {inst.key: f"further-{inst.cell.name}-{inst.key}-{self._token}" for inst in insts}
        graph: dict[str, Any] = {}
        for inst in insts:
            deps: list[Any] = []
            for dep in inst.dep_instances():
                if dep.key in names:
                    deps.append(names[dep.key])
                elif dep.key in self._by_key:  # in flight (or done) here: wait for its task
                    deps.append(self._by_key[dep.key])
                # else stored before the run: its value comes from the store
            opaque = _Opaque(thin(inst), names[inst.key])
            graph[names[inst.key]] = (ensure_in_graph, store, opaque, *deps)
        remotes = self.client.get(graph, [names[i.key] for i in insts], sync=False)
        self.graphs.append(len(insts))
        log.info("submitted a static chapter of %d instance(s) to Dask as one graph", len(insts))
        futures: list[cf.Future[Any]] = []
        by_remote: dict[str, cf.Future[Any]] = {}
        for inst, remote in zip(insts, remotes, strict=True):
            self._remote.append(remote)
            self._by_key[inst.key] = remote
            future: cf.Future[Any] = cf.Future()
            futures.append(future)
            by_remote[remote.key] = future
        # one thread gathers the chapter's results as they end, in batches, instead of one
        # blocking fetch per task from Dask's callback threads
        threading.Thread(
            target=_gather, args=(remotes, by_remote), name="further-dask-graph", daemon=True
        ).start()
        return futures

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        if cancel_futures:
            with contextlib.suppress(Exception):
                self.client.cancel([f for f in self._remote if not f.done()])
        self._stack.close()

    def abort(self) -> None:
        """Cancel every task that has not finished and close the client (Ctrl-C)."""
        self.shutdown(wait=False, cancel_futures=True)


def _gather(remotes: list[Any], by_remote: dict[str, cf.Future[Any]]) -> None:
    import distributed

    try:
        for remote, value in distributed.as_completed(
            remotes, with_results=True, raise_errors=False
        ):
            _settle(by_remote[remote.key], value)
    except BaseException as exc:  # noqa: BLE001 - the client closed (shutdown, Ctrl-C)
        for future in by_remote.values():
            if not future.done():
                future.set_exception(exc)


def _settle(future: cf.Future[Any], value: Any) -> None:
    """A graph task's value (its status pair, or the exception Dask raised for it)."""
    if future.done():
        return
    if isinstance(value, FurtherError):  # a dependency submitted alone failed: blocked
        future.set_exception(Blocked())
    elif isinstance(value, BaseException):
        future.set_exception(value)
    elif value[0] == _OK:
        future.set_result(value[1])
    elif value[0] == _FAILED:
        future.set_exception(value[1])
    else:
        future.set_exception(Blocked())


def _transfer(remote: Any) -> cf.Future[Any]:
    """A `concurrent.futures` future resolved from a Dask future (an instance alone)."""
    future: cf.Future[Any] = cf.Future()

    def transfer(done: Any) -> None:
        if future.done():
            return
        try:
            future.set_result(done.result())
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting caller
            future.set_exception(exc)

    remote.add_done_callback(transfer)
    return future
