"""Where missing instances run: one backend per execution mode, behind one protocol.

The scheduler (engine/scheduler.py) owns the ready queue and the bookkeeping; a backend only
takes instances that are ready and hands back one future per instance, resolved with the
store's `Outcome` (or the error). Backends are built lazily, on the first instance of their mode,
so a Session in LOCAL mode never imports dask or submitit.

| mode            | backend                               | module            |
|-----------------|---------------------------------------|-------------------|
| INLINE          | on the calling thread                 | local.py          |
| LOCAL           | a thread pool                         | local.py          |
| LOCAL_PROCESSES | a pool of spawned processes           | local.py          |
| DASK            | tasks on a Dask cluster               | dask.py           |
| DASK_STATIC_DAG | a static chapter as one Dask graph    | dask.py           |
| SLURM           | job arrays chained by --dependency    | slurm.py          |

A `GraphBackend` (DASK_STATIC_DAG, SLURM) also takes a whole static chapter at once
(`submit_graph`): instances in dependency order, each dependency stored, in the chapter, or in
flight on the same backend. A chapter's instance whose dependency failed never runs; its future
raises `Blocked`, and the scheduler counts it as blocked by that failure.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from further_dagster.core.instances import Instance
from further_dagster.engine.compute import ContributionCache
from further_dagster.engine.modes import Mode
from further_dagster.store import Outcome, Store

if TYPE_CHECKING:
    from further_dagster.engine.backends.slurm import SlurmSettings


def thin(inst: Instance) -> Instance:
    """`inst` with its dependencies but not theirs: what computing it needs (their cells, keys
    and Specs to load their results; releases are precomputed in `upstream_releases`). An
    instance pickles its whole upstream otherwise: a task at depth n of a chain would carry n
    instances."""
    deps = {
        edge: tuple(dataclasses.replace(d, deps={}) for d in dep)
        if isinstance(dep, tuple)
        else dataclasses.replace(dep, deps={})
        for edge, dep in inst.deps.items()
    }
    return dataclasses.replace(inst, deps=deps)


class Blocked(Exception):
    """An instance of a graph never ran because a dependency in it failed (the scheduler
    records it as blocked when it settles that failure)."""


@runtime_checkable
class Backend(Protocol):
    """Runs ready instances; every instance handed to it gets one future, in order."""

    def submit_many(self, insts: Sequence[Instance]) -> list[cf.Future[Outcome]]:
        """Start (or queue) every instance in `insts`; their dependencies are stored."""
        ...

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Release the backend's workers; with `cancel_futures`, drop what has not started."""
        ...

    def abort(self) -> None:
        """The caller was interrupted (Ctrl-C): drop what has not started, stop or abandon what
        runs (recording it as interrupted), and return at once, never waiting for a make()."""
        ...


@runtime_checkable
class GraphBackend(Backend, Protocol):
    """A backend that also takes a static chapter as one graph."""

    @property
    def graph_threshold(self) -> int | None:
        """The smallest chapter worth a graph; None: never (one wave at a time)."""
        ...

    def in_flight(self, key: str) -> bool:
        """Was `key` handed to this backend, and has it not failed (a graph may depend on it)?"""
        ...

    def submit_graph(self, insts: Sequence[Instance]) -> list[cf.Future[Outcome]]:
        """Start every instance of a chapter (dependencies first), each after its dependencies
        in the chapter or in flight here; one future per instance, in order."""
        ...


def make_backend(
    mode: Mode,
    store: Store,
    *,
    workers: int,
    cache: ContributionCache,
    slurm: SlurmSettings | None = None,
    static_dag_node_thresh: int | None = None,
) -> Backend:
    """The backend of `mode` (imports dask or submitit only for their modes)."""
    if mode is Mode.INLINE:
        from further_dagster.engine.backends.local import InlineBackend

        return InlineBackend(store, cache)
    if mode is Mode.LOCAL:
        from further_dagster.engine.backends.local import ThreadBackend

        return ThreadBackend(store, cache, workers)
    if mode is Mode.LOCAL_PROCESSES:
        from further_dagster.engine.backends.local import ProcessBackend

        return ProcessBackend(store, workers)
    if mode in (Mode.DASK, Mode.DASK_STATIC_DAG):
        from further_dagster.engine.backends.dask import DaskPool
        from further_dagster.settings import static_dag_node_thresh as thresh

        graphs = mode == Mode.DASK_STATIC_DAG
        return DaskPool(
            store, workers, graph_threshold=thresh(static_dag_node_thresh) if graphs else None
        )
    from further_dagster.engine.backends.slurm import SlurmPool

    return SlurmPool(store, slurm)


__all__ = ["Backend", "Blocked", "GraphBackend", "make_backend", "thin"]
