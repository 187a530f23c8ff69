"""Run the missing instances of a plan in dependency order, in parallel where the mode allows.

Independent instances run concurrently; a failed instance blocks only its dependents, and every
other instance still runs and is stored, so nothing computed is lost to one failure.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from further_dagster.core.instances import Instance
from further_dagster.engine.compute import ContributionCache, ensure
from further_dagster.engine.modes import Mode, effective_mode
from further_dagster.errors import CellComputeError, FurtherError
from further_dagster.store import ArtifactStore, Outcome

if TYPE_CHECKING:  # submitit is imported only when a SLURM instance runs
    from further_dagster.engine.backends.slurm import SlurmPool, SlurmSettings

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


def _pool(mode: Mode, workers: int, store: ArtifactStore) -> cf.Executor:
    if mode is Mode.LOCAL:
        return cf.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="further")
    if mode is Mode.LOCAL_PROCESSES:
        import multiprocessing

        return cf.ProcessPoolExecutor(
            max_workers=workers, mp_context=multiprocessing.get_context("spawn")
        )
    if mode is Mode.DASK:
        from further_dagster.engine.backends.dask import DaskPool

        return DaskPool(store, workers)
    raise FurtherError(f"no pool for mode {mode.value}")  # INLINE and SLURM never get here


def _dask_ensure(store_root: str, inst: Instance) -> Outcome:
    from further_dagster.engine.backends.dask import ensure_on_worker

    return ensure_on_worker(store_root, inst)


def _ensure_in_child(store_root: str, inst: Instance) -> Outcome:
    return ensure(ArtifactStore(store_root), inst)


def run_missing(
    store: ArtifactStore,
    missing: list[Instance],
    *,
    mode: Mode,
    max_workers: int | None = None,
    report: RunReport | None = None,
    on_done: Callable[[Instance, Outcome], None] | None = None,
    slurm: SlurmSettings | None = None,
) -> RunReport:
    """Compute `missing` (dependencies first). Raises the first CellComputeError at the end.

    Per instance, the cell's effective mode under the ceiling `mode` decides where it runs:
    INLINE here, LOCAL in threads, LOCAL_PROCESSES in spawned processes, DASK as Dask tasks
    (engine/dask_mode.py), SLURM as Slurm job-array tasks, one array per wave of instances that
    are ready together (engine/slurm_mode.py, configured by `slurm`).
    """
    report = report or RunReport()
    if not missing:
        return report
    start = time.perf_counter()
    todo = {inst.key: inst for inst in missing}
    waiting_on: dict[str, set[str]] = {
        inst.key: {d.key for d in inst.dep_instances() if d.key in todo} for inst in missing
    }
    dependents: dict[str, list[str]] = {k: [] for k in todo}
    for key, deps in waiting_on.items():
        for dep in deps:
            dependents[dep].append(key)
    modes = {
        inst.key: effective_mode(
            mode, inst.cell.mode, in_parallel=inst.cell.in_parallel, where=inst.cell.full_name
        )
        for inst in missing
    }
    workers = max_workers or min(32, (os.cpu_count() or 1) + 2)
    pools: dict[Mode, cf.Executor] = {}
    slurm_pool: SlurmPool | None = None
    cache = ContributionCache()
    ready = [k for k, deps in waiting_on.items() if not deps]
    running: dict[cf.Future[Outcome], str] = {}
    total, done = len(todo), 0

    def finish(key: str, outcome: Outcome | None, error: BaseException | None) -> None:
        nonlocal done
        done += 1
        inst = todo[key]
        if error is not None:
            report.failed[key] = error
            log.error("failed %s [%d/%d]: %s", inst.label, done, total, error)
            blocked = list(dependents[key])
            while blocked:
                b = blocked.pop()
                if b not in report.blocked:
                    report.blocked.append(b)
                    done += 1
                    blocked.extend(dependents[b])
            return
        assert outcome is not None
        report.outcomes[key] = outcome
        if outcome.hit:
            (report.waited if outcome.waited else report.cached).append(key)
            log.info("stored by another process %s [%d/%d]", inst.label, done, total)
        else:
            report.computed.append(key)
            log.info("computed %s in %.2fs [%d/%d]", inst.label, outcome.duration_s, done, total)
        if on_done is not None:
            on_done(inst, outcome)
        for dependent in dependents[key]:
            waiting_on[dependent].discard(key)
            if not waiting_on[dependent] and dependent not in report.blocked:
                ready.append(dependent)

    try:
        while ready or running:
            wave: list[str] = []  # SLURM instances ready together: one job array
            while ready:
                key = ready.pop(0)
                if key in report.blocked:
                    continue
                inst, inst_mode = todo[key], modes[key]
                if inst_mode is Mode.INLINE:
                    try:
                        finish(key, ensure(store, inst, cache), None)
                    except FurtherError as exc:
                        finish(key, None, exc)
                    continue
                if inst_mode is Mode.SLURM:
                    wave.append(key)
                    continue
                if inst_mode not in pools:
                    pools[inst_mode] = _pool(inst_mode, workers, store)
                if inst_mode is Mode.LOCAL_PROCESSES:
                    fut = pools[inst_mode].submit(_ensure_in_child, str(store.root), inst)
                elif inst_mode is Mode.DASK:
                    fut = pools[inst_mode].submit(_dask_ensure, str(store.root), inst)
                else:
                    fut = pools[inst_mode].submit(ensure, store, inst, cache)
                running[fut] = key
            if wave:
                if slurm_pool is None:
                    from further_dagster.engine.backends.slurm import SlurmPool

                    slurm_pool = SlurmPool(store, slurm)
                    pools[Mode.SLURM] = slurm_pool
                futures = slurm_pool.submit_many([todo[k] for k in wave])
                for key, fut in zip(wave, futures, strict=True):
                    running[fut] = key
            if not running:
                break
            finished, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
            for fut in finished:
                key = running.pop(fut)
                error = fut.exception()
                if error is None:
                    finish(key, fut.result(), None)
                elif isinstance(error, FurtherError):
                    finish(key, None, error)
                else:
                    raise error
    finally:
        for pool in pools.values():
            pool.shutdown(wait=True, cancel_futures=True)
    report.seconds += time.perf_counter() - start
    if report.failed:
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
    return report
