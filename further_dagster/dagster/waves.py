"""Steps in-process, instances on the engine's warm pools, in waves across steps.

Dagster's multiprocess executor starts a process per step (~1.7 s each, mostly imports and
instance setup), which dwarfs a trivial cell. But the keys of every step of a run are known
before the run starts (engine/plan.py), so a run's missing instances need not wait for their
steps: `WaveExecutor` hands all of them to the engine at once (`run_missing` in a background
thread, in the run's mode: a thread pool, one pool of spawned processes, a Dask cluster), which
runs whatever is ready together, across steps, on pools that stay warm for the whole run.
Meanwhile Dagster's own in-process executor runs the steps in dependency order: a step's body
(dagster/assets.py) first waits here for its instances (`wave_report`), then records what the
engine did as its own events (materializations with the logic keys as data versions, logs),
exactly as if it had computed them. So retries, failures, skipped downstream steps, hooks and
event logs are Dagster's own. Once the instances are in, recording is all a step does, and on
SQLite the commits were most of it: the steps' events are stored in batches (sqlite_events.py),
committed at least every second and whenever a step waits or computes.

A failed instance fails its step (its dependents in the engine are blocked, and Dagster skips
the downstream steps); a retry of that step (RetryPolicy) computes in the step itself, as the
per-step path does. A step whose missing instances include an upstream instance that no step of
the run owns (a partial selection over an empty store) is left to compute in its body, so that
it records that upstream work as it always did.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from further_dagster.core.instances import Instance
from further_dagster.dagster import _compat
from further_dagster.dagster import tags as T
from further_dagster.dagster.sqlite_events import (
    event_batch,
    suspend_event_batch,
    suspended_event_batch,
)
from further_dagster.engine.modes import Mode
from further_dagster.engine.scheduler import RunReport, run_missing
from further_dagster.errors import FurtherError
from further_dagster.store import Outcome, Store

if TYPE_CHECKING:  # the Slurm backend is imported only by a SLURM run
    from further_dagster.engine.backends.slurm import SlurmSettings, Submission

log = logging.getLogger("further")

_STARTS = ("STEP_START", "STEP_RESTARTED")  # a retry restarts its step
COMMIT_S = 1.0  # the longest a batch of the run's step events stays uncommitted


def wave_mode(mode: Mode) -> bool:
    """Does the wave executor run this mode's instances? Every mode but INLINE (in-process
    already). SLURM too: the run's missing instances go to Slurm in one pass (see
    `WaveExecutor`)."""
    return mode is not Mode.INLINE


class _Cancelled(KeyboardInterrupt):
    """Raised inside the engine's loop when the run stopped waiting (the run was terminated):
    the engine aborts its backends, as on Ctrl-C."""


@dataclass
class Waves:
    """The engine run of one Dagster run: which instances each step waits for, and what came
    back (outcomes, failures, blocked keys)."""

    run_id: str
    by_step: dict[str, list[str]]
    owned: Mapping[str, str] = field(default_factory=dict)
    report: RunReport = field(default_factory=RunReport)
    finished: bool = False
    crashed: BaseException | None = None
    cancelled: bool = False
    consumed: set[str] = field(default_factory=set)
    _cond: threading.Condition = field(default_factory=threading.Condition)

    def on_done(self, inst: Instance, outcome: Outcome) -> None:
        del inst, outcome  # recorded in `report` by the scheduler already
        with self._cond:
            self._cond.notify_all()
        if self.cancelled:
            raise _Cancelled()

    def _settled(self, key: str) -> bool:
        report = self.report
        return key in report.outcomes or key in report.failed or key in report.blocked

    def reports(self, step_key: str) -> bool:
        """Will the step record what the engine computes (rather than compute in its body)?
        It is in the wave and has not asked yet (a retry computes in its body)."""
        return step_key in self.by_step and step_key not in self.consumed

    def wait(self, step_key: str) -> RunReport | None:
        """Block until the engine settled every instance of `step_key`; its outcomes, or None
        when the step computes itself (not in the wave, a retry, or the engine crashed).
        Raises the failure of one of its own instances (a FurtherError) on its first attempt;
        when only an upstream instance failed, the step computes itself (and fails the same
        way, or succeeds if Dagster retried that upstream step meanwhile)."""
        keys = self.by_step.get(step_key)
        if keys is None or step_key in self.consumed:
            suspend_event_batch()  # the step computes in its body
            return None
        self.consumed.add(step_key)

        def done() -> bool:
            return self.finished or all(self._settled(k) for k in keys)

        with self._cond:
            waiting = not done()
        if waiting:
            with suspended_event_batch(), self._cond:  # nobody waits for this thread's batch
                # a failure does not call `on_done` (no engine hook for it): poll for those
                while not done():
                    self._cond.wait(timeout=0.05)
        with self._cond:
            report = self.report
            if not all(self._settled(k) for k in keys):
                log.warning(
                    "the wave engine stopped (%s); step %s computes itself", self.crashed, step_key
                )
                suspend_event_batch()
                return None
            for key in keys:
                if key in report.failed and self.owned.get(key) == step_key:
                    raise report.failed[key]
            if any(k in report.failed or k in report.blocked for k in keys):
                suspend_event_batch()  # the step computes what is missing itself
                return None
            mine = RunReport()
            for key in keys:
                outcome = report.outcomes[key]
                mine.outcomes[key] = outcome
                (mine.cached if outcome.hit else mine.computed).append(key)
            return mine

    def run(
        self,
        store: Store,
        missing: Sequence[Instance],
        mode: Mode,
        workers: int | None,
        slurm: SlurmSettings | None = None,
    ) -> None:
        try:
            run_missing(
                store,
                missing,
                mode=mode,
                max_workers=workers,
                report=self.report,
                on_done=self.on_done,
                slurm=slurm,
            )
        except FurtherError:
            pass  # recorded per instance in the report; each step raises its own
        except BaseException as exc:  # noqa: BLE001 - a bug or a stop: steps compute themselves
            if not isinstance(exc, _Cancelled):
                log.error("the wave engine of run %s stopped: %r", self.run_id, exc)
            self.crashed = exc
        finally:
            with self._cond:
                self.finished = True
                self._cond.notify_all()


def _cancel_jobs(slurm: SlurmSettings, parents: Sequence[str]) -> None:
    client = slurm.client
    if client is None or not parents:
        return
    log.warning("cancelling the run's Slurm job(s) %s", ", ".join(parents))
    for parent in list(parents):
        try:
            client.cancel(parent)
        except FurtherError as exc:
            log.error("%s", exc)


_ACTIVE: dict[str, Waves] = {}
_ACTIVE_LOCK = threading.Lock()


def wave_report(run_id: str, step_key: str) -> RunReport | None:
    """What the wave engine of run `run_id` computed for `step_key` (blocking until it has
    settled every instance of the step), or None when the step computes itself. Called by the
    asset body before it plans its step."""
    with _ACTIVE_LOCK:
        waves = _ACTIVE.get(run_id)
    return None if waves is None else waves.wait(step_key)


def wave_steps(
    missing_by_step: Mapping[str, Sequence[Instance]], owned: Mapping[str, str]
) -> dict[str, list[Instance]]:
    """The steps the wave computes (see the module docstring): those whose missing instances
    are all owned by a step of the run (instance key -> step key) or are resource reads."""
    out: dict[str, list[Instance]] = {}
    for step_key, insts in missing_by_step.items():
        if insts and all(i.key in owned or i.cell.is_resource for i in insts):
            out[step_key] = list(insts)
    return out


class WaveExecutor(_compat.Executor):
    """Dagster's in-process executor over the steps, the engine over their instances.

    In SLURM mode (`slurm` given: dagster/slurm_step_handler.py `wave_settings`) the engine
    submits each static chapter of the run's missing instances in one pass: the instances of
    independent steps that share a spec are one job array, and a dependent step's instances
    wait in Slurm (`--dependency=aftercorr/afterok`), not in this process. Each sbatch is
    logged to the run's event log and its job ids go to the run tags
    `further/slurm_array/<step key>` of the steps whose instances it holds, where the run
    launcher's terminate finds them; a run that stops before its wave settled (terminated,
    interrupted) scancels them itself. Cells whose effective mode is below SLURM run here,
    next to the run worker, as the engine's own backends.
    """

    def __init__(
        self,
        store: Store,
        mode: Mode,
        retries: Mapping[str, Any],
        workers: int | None = None,
        slurm: SlurmSettings | None = None,
    ) -> None:
        self.store = store
        self.mode = mode
        self.slurm = slurm
        self.inner = _compat.inner_executor("in_process", {"retries": dict(retries)})
        self.workers = workers
        self.planned: dict[str, list[Instance]] = {}
        self.owned: dict[str, str] = {}

    @property
    def retries(self) -> _compat.RetryMode:
        return self.inner.retries

    @property
    def step_dependency_config(self) -> Any:
        return self.inner.step_dependency_config

    def plan(self, by_step: Mapping[str, Sequence[Instance]], owned: Mapping[str, str]) -> None:
        """The missing instances of the steps the wave computes, and the step that owns each
        instance (instance key -> step key), set before `execute`."""
        self.planned = {k: list(v) for k, v in by_step.items()}
        self.owned = dict(owned)

    def execute(
        self, plan_context: _compat.PlanOrchestrationContext, execution_plan: _compat.ExecutionPlan
    ) -> Iterator[_compat.DagsterEvent]:
        run_id = plan_context.run_id
        to_run = set(execution_plan.step_keys_to_execute)
        planned = {k: v for k, v in self.planned.items() if k in to_run}
        union: dict[str, Instance] = {}
        for insts in planned.values():
            for inst in insts:
                union.setdefault(inst.key, inst)
        context = _compat.with_executor(plan_context, self.inner)
        if not union:
            yield from self.inner.execute(context, execution_plan)
            return
        where = _compat.code_working_directory(plan_context)
        if where is not None and where not in sys.path:
            sys.path.insert(0, where)  # spawned workers (LOCAL_PROCESSES, Dask) inherit it
        waves = Waves(run_id, {k: [i.key for i in v] for k, v in planned.items()}, self.owned)
        order = list(union.values())
        submitted: list[str] = []  # Slurm parent job ids, for a cancel on the way out
        slurm = None
        if self.slurm is not None:
            slurm = replace(self.slurm, on_submit=self._recorder(plan_context, planned, submitted))
        yield _compat.log_run_event(
            plan_context,
            "engine",
            _compat.EngineEventData(metadata={T.WAVE_INSTANCES: len(order)}),
            None,
            f"further: {len(order)} missing instance(s) of {len(planned)} step(s) sent to the "
            f"engine ({self.mode.value}); steps run in-process as their instances finish",
        )
        thread = threading.Thread(
            target=waves.run,
            args=(self.store, order, self.mode, self.workers, slurm),
            name=f"further-waves-{run_id[:8]}",
            daemon=True,
        )
        with _ACTIVE_LOCK:
            _ACTIVE[run_id] = waves
        thread.start()
        try:
            yield from self._batched(plan_context.instance, waves, context, execution_plan)
        finally:
            waves.cancelled = True  # only matters when a step left before its wave finished
            with _ACTIVE_LOCK:
                _ACTIVE.pop(run_id, None)
            if slurm is not None and not waves.finished:
                # the engine aborts its pool only when its next instance ends: a terminated
                # run must not leave tasks queued meanwhile (or for ever, when this process dies)
                _cancel_jobs(slurm, submitted)
            thread.join(timeout=None if waves.finished else 5.0)

    def _recorder(
        self,
        plan_context: _compat.PlanOrchestrationContext,
        planned: Mapping[str, Sequence[Instance]],
        submitted: list[str],
    ) -> Callable[[Submission], None]:
        """The `on_submit` hook of the run's Slurm pool: each sbatch's job ids in the run tags
        of the steps whose instances it holds, and an engine event in the run's log."""
        from further_dagster.dagster.slurm_step_handler import record_submission

        instance, run = plan_context.instance, plan_context.dagster_run
        step_of: dict[str, str] = {}
        for step_key, insts in planned.items():
            for inst in insts:
                step_of.setdefault(inst.key, step_key)
        step_of.update(self.owned)

        def record(submission: Submission) -> None:
            by_step: dict[str, list[str]] = {}
            for key, job_id in zip(submission.keys, submission.job_ids, strict=False):
                by_step.setdefault(step_of.get(key, "run"), []).append(job_id)
            if not by_step:
                by_step["run"] = list(submission.job_ids)
            parents = record_submission(instance, run.run_id, by_step)
            submitted.extend(parents)
            kind = "one job array" if submission.array else "one job"
            instance.report_engine_event(
                f"further: submitted {len(submission.job_ids)} instance(s) of "
                f"{submission.cell} (step(s) {', '.join(sorted(by_step))}) to Slurm as {kind} "
                f"{', '.join(parents)} in {submission.seconds:.3f}s",
                run,
                _compat.EngineEventData(
                    metadata={
                        "Slurm job ids": ", ".join(parents),
                        T.WAVE_INSTANCES: len(submission.job_ids),
                    }
                ),
            )

        return record

    def _batched(
        self,
        instance: Any,
        waves: Waves,
        context: _compat.PlanOrchestrationContext,
        execution_plan: _compat.ExecutionPlan,
    ) -> Iterator[_compat.DagsterEvent]:
        """The in-process executor's events, stored in batches (sqlite_events.py) while the
        steps only record what the engine computed: once its instances are settled, a step of
        the wave records its events in no time but for the commits, which were most of the
        sequential part of a run. A step that computes (a retry, a step outside the wave, one
        whose upstream instance failed) runs with the batch committed and let go of, and so
        does a step while it waits for the engine (`Waves.wait`); the batch commits at least
        every `COMMIT_S` seconds, so the UI follows."""
        with event_batch(instance) as batch:
            for event in self.inner.execute(context, execution_plan):
                if batch is not None:
                    if event.event_type_value in _STARTS and event.step_key is not None:
                        if waves.reports(event.step_key):
                            batch.resume()
                        else:
                            batch.suspend()
                    batch.commit(older_than=COMMIT_S)
                yield event


__all__ = ["WaveExecutor", "Waves", "wave_mode", "wave_report", "wave_steps"]
