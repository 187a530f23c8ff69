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
| SLURM           | one Slurm job array per ready wave    | slurm.py          |
"""

from __future__ import annotations

import concurrent.futures as cf
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from further_dagster.core.instances import Instance
from further_dagster.engine.compute import ContributionCache
from further_dagster.engine.modes import Mode
from further_dagster.store import Outcome, Store

if TYPE_CHECKING:
    from further_dagster.engine.backends.slurm import SlurmSettings


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


def make_backend(
    mode: Mode,
    store: Store,
    *,
    workers: int,
    cache: ContributionCache,
    slurm: SlurmSettings | None = None,
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
    if mode is Mode.DASK:
        from further_dagster.engine.backends.dask import DaskPool

        return DaskPool(store, workers)
    from further_dagster.engine.backends.slurm import SlurmPool

    return SlurmPool(store, slurm)


__all__ = ["Backend", "make_backend"]
