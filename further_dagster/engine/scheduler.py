"""Run the missing instances of a plan in dependency order, in parallel where the mode allows.

Three parts, each testable alone: `Progress` is the ready queue and the bookkeeping (what is
ready, what a failure blocks, the report); the backends (engine/backends/) run instances; and
`run_missing` moves ready instances to their mode's backend and settles what comes back.
Independent instances run concurrently; a failed instance blocks only its dependents, and every
other instance still runs and is stored, so nothing computed is lost to one failure.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from further_dagster.core.instances import Instance
from further_dagster.engine.backends import Backend, make_backend
from further_dagster.engine.compute import ContributionCache
from further_dagster.engine.modes import Mode, effective_mode
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


class Progress:
    """The ready queue over `missing` (dependencies first) and what each result means."""

    def __init__(
        self, missing: Sequence[Instance], report: RunReport, on_done: OnDone | None = None
    ) -> None:
        self.todo = {inst.key: inst for inst in missing}
        self.report = report
        self.on_done = on_done
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

    def failed(self, key: str, error: BaseException) -> None:
        """Record the failure and block everything that depends on it, transitively."""
        self.done += 1
        self.report.failed[key] = error
        log.error("failed %s [%d/%d]: %s", self.todo[key].label, self.done, self.total, error)
        pending = list(self.dependents[key])
        while pending:
            blocked = pending.pop()
            if blocked not in self._blocked:
                self._blocked.add(blocked)
                self.report.blocked.append(blocked)
                self.done += 1
                pending.extend(self.dependents[blocked])


class _Backends:
    """The backends of one run, built on first use and shut down together."""

    def __init__(
        self, store: Store, workers: int, cache: ContributionCache, slurm: SlurmSettings | None
    ) -> None:
        self.store, self.workers, self.cache, self.slurm = store, workers, cache, slurm
        self.by_mode: dict[Mode, Backend] = {}

    def get(self, mode: Mode) -> Backend:
        backend = self.by_mode.get(mode)
        if backend is None:
            backend = self.by_mode[mode] = make_backend(
                mode, self.store, workers=self.workers, cache=self.cache, slurm=self.slurm
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
) -> RunReport:
    """Compute `missing` (dependencies first). Raises the first CellComputeError at the end.

    A `KeyboardInterrupt` (Ctrl-C) or `SystemExit` while instances run returns at once: what
    has not started is cancelled, running processes are terminated and running threads
    abandoned (their attempts recorded as `interrupted`, their leases released), and the
    interrupt is re-raised to the caller.

    Per instance, the cell's effective mode under the ceiling `mode` decides its backend
    (engine/backends/): INLINE here, LOCAL in threads, LOCAL_PROCESSES in spawned processes,
    DASK as Dask tasks, SLURM as Slurm job-array tasks, one array per wave of instances that are
    ready together (configured by `slurm`).
    """
    report = report or RunReport()
    if not missing:
        return report
    start = time.perf_counter()
    progress = Progress(missing, report, on_done)
    modes = {
        inst.key: effective_mode(
            mode, inst.cell.mode, in_parallel=inst.cell.in_parallel, where=inst.cell.full_name
        )
        for inst in missing
    }
    workers = max_workers or min(32, (os.cpu_count() or 1) + 2)
    backends = _Backends(store, workers, ContributionCache(), slurm)
    running: dict[cf.Future[Outcome], str] = {}
    try:
        while progress.ready or running:
            for inst_mode, group in _by_mode(progress.take_ready(), modes).items():
                futures = backends.get(inst_mode).submit_many(group)
                running.update((f, i.key) for f, i in zip(futures, group, strict=True))
            if not running:
                break
            finished, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
            for future in finished:
                _settle(progress, running.pop(future), future)
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
