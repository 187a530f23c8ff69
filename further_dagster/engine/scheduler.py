"""Run the missing instances of a plan in dependency order, in parallel where the mode allows.

Three parts, each testable alone: `Progress` is the ready queue and the bookkeeping (what is
ready, what a failure blocks, the report); the backends (engine/backends/) run instances; and
`run_missing` moves ready instances to their mode's backend and settles what comes back.
Independent instances run concurrently; a failed instance blocks only its dependents, and every
other instance still runs and is stored, so nothing computed is lost to one failure.

Static chapters (modes DASK_STATIC_DAG and SLURM): every key of a plan is known before it runs,
so instead of handing a graph backend one wave of ready instances at a time, `_Chapters` finds
the region of missing instances that can go to it together (same mode, no resource cell, each
dependency stored, in flight on that backend, or in the region) and the backend takes the whole
region as one graph (`GraphBackend.submit_graph`: one Dask graph, or Slurm arrays chained by
`--dependency`) when it has at least the backend's `graph_threshold` instances. Whatever a
resource cell or another mode computes opens the next chapter when it is done.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import os
import queue
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from further_dagster.core.instances import Instance
from further_dagster.engine.backends import Backend, Blocked, GraphBackend, make_backend
from further_dagster.engine.compute import ContributionCache
from further_dagster.engine.modes import GRAPH_MODES, Mode, effective_mode, parse_mode
from further_dagster.errors import CellComputeError, FurtherError
from further_dagster.store import Outcome, Store

if TYPE_CHECKING:  # submitit is imported only when a SLURM instance runs
    from further_dagster.engine.backends.slurm import SlurmSettings

log = logging.getLogger("further")


@dataclass
class RunReport:
    """What one call did: keys computed, found stored, waited for, failed and blocked."""

    computed: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    waited: list[str] = field(default_factory=list)
    failed: dict[str, BaseException] = field(default_factory=dict)
    blocked: list[str] = field(default_factory=list)
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    seconds: float = 0.0

    def summary(self) -> str:
        return (
            f"{len(self.computed)} computed, {len(self.cached)} cached, "
            f"{len(self.waited)} waited for, {len(self.failed)} failed, "
            f"{len(self.blocked)} blocked, {self.seconds:.2f}s"
        )


OnDone = Callable[[Instance, Outcome], None]
OnFailed = Callable[[Instance, BaseException], None]


class Progress:
    """The ready queue over `missing` (dependencies first) and what each result means."""

    def __init__(
        self,
        missing: Sequence[Instance],
        report: RunReport,
        on_done: OnDone | None = None,
        on_failed: OnFailed | None = None,
    ) -> None:
        self.todo = {inst.key: inst for inst in missing}
        self.report = report
        self.on_done = on_done
        self.on_failed = on_failed
        self.waiting_on: dict[str, set[str]] = {
            inst.key: {d.key for d in inst.dep_instances() if d.key in self.todo}
            for inst in missing
        }
        self.dependents: dict[str, list[str]] = {k: [] for k in self.todo}
        for key, deps in self.waiting_on.items():
            for dep in deps:
                self.dependents[dep].append(key)
        self.ready: deque[str] = deque(k for k, deps in self.waiting_on.items() if not deps)
        self._blocked: set[str] = set()
        self.total, self.done = len(self.todo), 0

    def take_ready(self) -> list[Instance]:
        """Every instance ready now (its dependencies are stored), in order."""
        out = [self.todo[k] for k in self.ready if k not in self._blocked]
        self.ready.clear()
        return out

    def succeeded(self, key: str, outcome: Outcome) -> None:
        self.done += 1
        inst, report = self.todo[key], self.report
        report.outcomes[key] = outcome
        if outcome.hit:
            (report.waited if outcome.waited else report.cached).append(key)
            log.info("stored by another process %s [%d/%d]", inst.label, self.done, self.total)
        else:
            report.computed.append(key)
            log.info(
                "computed %s in %.2fs [%d/%d]",
                inst.label,
                outcome.duration_s,
                self.done,
                self.total,
            )
        if self.on_done is not None:
            self.on_done(inst, outcome)
        for dependent in self.dependents[key]:
            self.waiting_on[dependent].discard(key)
            if not self.waiting_on[dependent] and dependent not in self._blocked:
                self.ready.append(dependent)

    def is_blocked(self, key: str) -> bool:
        return key in self._blocked

    def failed(self, key: str, error: BaseException) -> None:
        """Record the failure and block everything that depends on it, transitively
        (`on_failed` hears of the failure, then of each instance it blocks, with `Blocked`)."""
        self.done += 1
        self.report.failed[key] = error
        failed = self.todo[key]
        log.error("failed %s [%d/%d]: %s", failed.label, self.done, self.total, error)
        if self.on_failed is not None:
            self.on_failed(failed, error)
        pending = list(self.dependents[key])
        while pending:
            blocked = pending.pop()
            if blocked not in self._blocked:
                self._blocked.add(blocked)
                self.report.blocked.append(blocked)
                self.done += 1
                pending.extend(self.dependents[blocked])
                if self.on_failed is not None:
                    self.on_failed(
                        self.todo[blocked], Blocked(f"blocked by the failure of {failed.label}")
                    )


class _Backends:
    """The backends of one run, built on first use and shut down together."""

    def __init__(
        self,
        store: Store,
        workers: int,
        cache: ContributionCache,
        slurm: SlurmSettings | None,
        static_dag_node_thresh: int | None = None,
    ) -> None:
        self.store, self.workers, self.cache, self.slurm = store, workers, cache, slurm
        self.thresh = static_dag_node_thresh
        self.by_mode: dict[Mode, Backend] = {}

    def get(self, mode: Mode) -> Backend:
        backend = self.by_mode.get(mode)
        if backend is None:
            backend = self.by_mode[mode] = make_backend(
                mode,
                self.store,
                workers=self.workers,
                cache=self.cache,
                slurm=self.slurm,
                static_dag_node_thresh=self.thresh,
            )
        return backend

    def shutdown(self) -> None:
        for backend in self.by_mode.values():
            backend.shutdown(wait=True, cancel_futures=True)

    def abort(self) -> None:
        """The caller was interrupted: every backend drops, stops or abandons its work now."""
        for backend in self.by_mode.values():
            try:
                backend.abort()
            except Exception as exc:  # noqa: BLE001 - the interrupt must still reach the caller
                log.error("could not abort the %s backend: %s", type(backend).__name__, exc)


class _Chapters:
    """The static chapters of one run: regions of missing instances a graph backend takes at
    once (see the module docstring)."""

    def __init__(self, missing: Sequence[Instance], modes: dict[str, Mode]) -> None:
        self.modes = modes
        # dependencies first, as `missing` is
        # static: no resource cell (its release is read when it runs) and no DYN/STUB/RAND
        # edge (resolved inside make())
        self.order = [
            inst
            for inst in missing
            if modes[inst.key] in GRAPH_MODES and not inst.cell.is_resource and not inst.dynamic
        ]
        self.static = frozenset(inst.key for inst in self.order)

    def wanted(self, ready: Iterable[Instance], submitted: set[str]) -> bool:
        """Is a static instance ready that no graph took yet (a chapter may start here)?"""
        return any(i.key in self.static and i.key not in submitted for i in ready)

    def find(
        self, progress: Progress, submitted: set[str], backends: _Backends
    ) -> list[tuple[GraphBackend, list[Instance]]]:
        """Each graph backend's chapter now, if it is at least the backend's threshold."""
        self.order = [i for i in self.order if i.key not in submitted]
        graphs = {m for m in {self.modes[i.key] for i in self.order} if _takes_graphs(backends, m)}
        if not graphs:  # e.g. SLURM one wave at a time: no chapter, ever
            self.static = frozenset()
            return []
        chapters: dict[Mode, list[Instance]] = {}
        inside: set[str] = set()
        done = progress.report.outcomes
        for inst in self.order:
            key, mode = inst.key, self.modes[inst.key]
            if mode not in graphs or progress.is_blocked(key):
                continue
            backend = backends.get(mode)
            assert isinstance(backend, GraphBackend)
            if all(
                d.key not in progress.todo
                or d.key in done
                or (d.key in inside and self.modes[d.key] is mode)
                or backend.in_flight(d.key)
                for d in inst.dep_instances()
            ):
                chapters.setdefault(mode, []).append(inst)
                inside.add(key)
        out: list[tuple[GraphBackend, list[Instance]]] = []
        for mode, chapter in chapters.items():
            backend = backends.get(mode)
            assert isinstance(backend, GraphBackend) and backend.graph_threshold is not None
            if len(chapter) >= backend.graph_threshold:
                out.append((backend, chapter))
        return out


def _takes_graphs(backends: _Backends, mode: Mode) -> bool:
    backend = backends.get(mode)
    return isinstance(backend, GraphBackend) and backend.graph_threshold is not None


def _by_mode(insts: Iterable[Instance], modes: dict[str, Mode]) -> dict[Mode, list[Instance]]:
    """Ready instances grouped by mode, each group in order (a SLURM group is one array)."""
    groups: dict[Mode, list[Instance]] = {}
    for inst in insts:
        groups.setdefault(modes[inst.key], []).append(inst)
    return groups


def run_missing(
    store: Store,
    missing: Sequence[Instance],
    *,
    mode: Mode,
    max_workers: int | None = None,
    report: RunReport | None = None,
    on_done: OnDone | None = None,
    slurm: SlurmSettings | None = None,
    static_dag_node_thresh: int | None = None,
    on_failed: OnFailed | None = None,
) -> RunReport:
    """Compute `missing` (dependencies first). Raises the first CellComputeError at the end.

    `on_done(inst, outcome)` is called (on this thread) as each instance is stored, and
    `on_failed(inst, error)` as each fails, then for each instance that failure blocks (its
    error a `Blocked`), so a caller waiting for some instances never needs to poll the report.

    A `KeyboardInterrupt` (Ctrl-C) or `SystemExit` while instances run returns at once: what
    has not started is cancelled, running processes are terminated and running threads
    abandoned (their attempts recorded as `interrupted`, their leases released), and the
    interrupt is re-raised to the caller.

    Per instance, the cell's effective mode under the ceiling `mode` decides its backend
    (engine/backends/): INLINE here, LOCAL in threads, LOCAL_PROCESSES in spawned processes,
    DASK as Dask tasks, DASK_STATIC_DAG as one Dask graph per static chapter of at least
    `static_dag_node_thresh` instances (default `FURTHER_STATIC_DAG_NODE_THRESH`, 50; smaller
    chapters run as in DASK), SLURM as Slurm job arrays, a static chapter in one pass with
    Slurm's dependencies between the arrays (configured by `slurm`).
    """
    report = report or RunReport()
    if not missing:
        return report
    start = time.perf_counter()
    mode = parse_mode(mode, where="run_missing")
    warm = getattr(store, "warm_index", None)  # an ArtifactStore opens its index meanwhile
    if callable(warm):
        warm()
    progress = Progress(missing, report, on_done, on_failed)
    modes = {
        inst.key: effective_mode(
            mode, inst.cell.mode, in_parallel=inst.cell.in_parallel, where=inst.cell.full_name
        )
        for inst in missing
    }
    workers = max_workers or min(32, (os.cpu_count() or 1) + 2)
    backends = _Backends(store, workers, ContributionCache(), slurm, static_dag_node_thresh)
    chapters = _Chapters(missing, modes)
    submitted: set[str] = set()  # handed to a backend (a chapter takes some before they are ready)
    running: dict[cf.Future[Outcome], str] = {}
    # Finished futures arrive here through their done callbacks: `cf.wait` over every running
    # future would register and remove a waiter on each of them per completion (quadratic in
    # a sweep whose points all run at once).
    finished: queue.SimpleQueue[cf.Future[Outcome]] = queue.SimpleQueue()

    def track(futures: Sequence[cf.Future[Outcome]], insts: Sequence[Instance]) -> None:
        for future, inst in zip(futures, insts, strict=True):
            running[future] = inst.key
            submitted.add(inst.key)
            future.add_done_callback(finished.put)

    try:
        while progress.ready or running:
            ready = [i for i in progress.take_ready() if i.key not in submitted]
            if chapters.wanted(ready, submitted):
                for backend, chapter in chapters.find(progress, submitted, backends):
                    track(backend.submit_graph(chapter), chapter)
                ready = [i for i in ready if i.key not in submitted]
            for inst_mode, group in _by_mode(ready, modes).items():
                track(backends.get(inst_mode).submit_many(group), group)
            if not running:
                break
            future = finished.get()
            while True:  # settle every future done by now before submitting what they free
                _settle(progress, running.pop(future), future)
                try:
                    future = finished.get_nowait()
                except queue.Empty:
                    break
    except BaseException as exc:
        if isinstance(exc, Exception):
            backends.shutdown()
        else:  # KeyboardInterrupt, SystemExit: give the caller control back now
            log.warning("interrupted: cancelling %d instance(s) not finished yet", len(running))
            backends.abort()
        raise
    backends.shutdown()
    report.seconds += time.perf_counter() - start
    _raise_failures(report)
    return report


def _settle(progress: Progress, key: str, future: cf.Future[Outcome]) -> None:
    error = future.exception()
    if isinstance(error, Blocked) or progress.is_blocked(key):
        return  # a failed dependency blocks it (when that failure is settled)
    if error is None:
        progress.succeeded(key, future.result())
    elif isinstance(error, FurtherError):
        progress.failed(key, error)
    else:  # not a cell's failure (a bug, an interrupt): stop the run
        raise error


def _raise_failures(report: RunReport) -> None:
    """Raise the first failure, saying how many failed and were blocked when there are more."""
    if not report.failed:
        return
    first = next(iter(report.failed.values()))
    if len(report.failed) == 1 and not report.blocked:
        raise first
    extra = (
        f" ({len(report.failed)} instance(s) failed, {len(report.blocked)} blocked "
        f"by them; everything else was stored)"
    )
    if isinstance(first, CellComputeError):
        raise CellComputeError(
            str(first) + extra,
            cell=first.cell,
            key=first.key,
            state_path=first.state_path,
            remote_traceback=first.remote_traceback,
        ) from first
    raise first


__all__ = ["Progress", "RunReport", "run_missing"]
