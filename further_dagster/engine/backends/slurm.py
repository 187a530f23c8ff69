"""The SLURM backend: instances that are ready together go to Slurm as ONE job array.

`run_missing` hands every wave of ready SLURM-mode instances to a `SlurmPool`, which groups them
by their merged `SlurmSpec` and submits each group with one `SlurmClient.submit_batch` (one
sbatch, one job array; one task per instance). A task runs `compute.ensure` for its instance in
a fresh interpreter that never imports dagster, so it costs a Python start plus make(); the
result goes to the shared store, and the pool only learns that the task ended:

- a task ends when its result appears (`client.result`, checked every `poll_s`: a `stat` per
  task with the real client);
- a task that Slurm ended without a result (cancelled, timed out, node failure, out of memory)
  is found by one `client.states` call per `state_every_s` for all pending tasks;
- a preempted task is requeued by Slurm and simply runs again: `ensure` is idempotent (a second
  run finds the key stored, or takes over the dead holder's lease).

Settings come from `SlurmSettings` (a Session's `slurm=`, or, in a Dagster fan-out step, built
from the run config and the instance by dagster/slurm_step_handler.py). Spec layers, lowest first:
`SlurmSettings.base` (launcher defaults < executor run config), then the cell's `slurm`. The
client is `SlurmSettings.client` (default `SubmititClient()`; a unit test passes
`further_dagster.testing.slurm.FakeSlurmClient`).
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from further_dagster.core.instances import Instance
from further_dagster.errors import CellComputeError, FurtherError, SlurmJobError
from further_dagster.slurm import SlurmSpec, merge, states
from further_dagster.store import Outcome, Store

if TYPE_CHECKING:
    from further_dagster.slurm.client import JobResult, SlurmClient, SubmittedJob

__all__ = [
    "SlurmPool",
    "SlurmSettings",
    "Submission",
    "cell_spec",
    "ensure_in_job",
    "spec_for",
]

log = logging.getLogger("further")


@dataclass(frozen=True)
class Submission:
    """One sbatch call of the pool: which cell, which job ids (array tasks `<id>_<index>`),
    and how long submitting took."""

    cell: str
    job_ids: list[str]
    seconds: float
    array: bool


@dataclass(frozen=True)
class SlurmSettings:
    """How the engine submits SLURM-mode instances.

    Attributes:
        folder: submitit folder (job pickles, sbatch files, logs); every node must see it.
            None: `<store root>/.slurm/<unique>` per pool, so a restarted cluster that reuses
            job ids never reads an old result file.
        base: the spec layers below each cell's own `slurm` (launcher defaults < executor
            run config), already merged.
        array: one job array per wave of ready instances (True), or one sbatch per instance
            (False: the baseline the bench compares against).
        python: interpreter command for the jobs; None: this process's `sys.executable`.
        poll_s: how often result files are checked.
        state_every_s: how often Slurm is asked about tasks that have no result yet.
        on_submit: called with a `Submission` after each sbatch call (job ids, seconds), e.g.
            to record the ids in Dagster run tags so a cancel can find them.
        client: who talks to Slurm; None: `SubmititClient()`.
    """

    folder: Path | None = None
    base: SlurmSpec = field(default_factory=SlurmSpec)
    array: bool = True
    python: str | None = None
    poll_s: float = 0.25
    state_every_s: float = 2.0
    on_submit: Callable[[Submission], None] | None = None
    client: SlurmClient | None = None


def spec_json(spec: SlurmSpec) -> dict[str, Any]:
    """The fields `spec` set explicitly, JSON-ready (so a merge of it keeps its precedence)."""
    out = spec.overrides()
    if "fallbacks" in out:
        out["fallbacks"] = [spec_json(f) for f in out["fallbacks"]]
    return out


def _as_spec(value: Any, where: str) -> SlurmSpec:
    if isinstance(value, SlurmSpec):
        return value
    if isinstance(value, Mapping):
        return SlurmSpec(**dict(value))
    raise SlurmJobError(
        f"{where}.slurm must be a SlurmSpec, a dict of its fields, or a list of them (the first "
        f"is tried first, the others are fallbacks); got {type(value).__name__}"
    )


def cell_spec(cell: Any) -> SlurmSpec | None:
    """A cell's own `slurm` attribute as one SlurmSpec (a list becomes spec + fallbacks)."""
    value = getattr(cell, "slurm", None)
    where = getattr(cell, "full_name", repr(cell))
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        if not value:
            return None
        first, *rest = (_as_spec(v, where) for v in value)
        fields = {k: v for k, v in first.overrides().items() if k != "fallbacks"}
        return SlurmSpec(**fields, fallbacks=(*first.fallbacks, *rest))
    return _as_spec(value, where)


def spec_for(cell: Any, base: SlurmSpec | None = None) -> SlurmSpec:
    """launcher defaults < executor run config (`base`) < the cell's own spec."""
    return merge(base, cell_spec(cell))


def ensure_in_job(store: Store, inst: Instance) -> Outcome:
    """What one Slurm task runs: compute (or find) `inst` in the shared store (the store
    travels pickled, with its settings)."""
    from further_dagster.engine.compute import ensure

    return ensure(store, inst)


@dataclass
class _Task:
    inst: Instance
    job: SubmittedJob
    future: cf.Future[Outcome]
    spec: SlurmSpec
    ended_seen: int = 0  # state polls that found the task ended without a result file


class SlurmPool(cf.Executor):
    """Runs instances as Slurm job-array tasks; futures complete from a watcher thread."""

    def __init__(self, store: Store, settings: SlurmSettings | None = None) -> None:
        self.store = store
        self.settings = settings or SlurmSettings()
        self.client: SlurmClient = self.settings.client or _default_client()
        folder = self.settings.folder
        if folder is None:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            folder = store.root / ".slurm" / f"{stamp}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.folder = Path(folder)
        self.submissions: list[list[str]] = []  # job ids per sbatch call
        self._tasks: list[_Task] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # cf.Executor's single-call API, for completeness (run_missing uses submit_many)
    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> cf.Future[Any]:
        raise TypeError("SlurmPool runs instances: use submit_many([instance, ...])")

    def submit_many(self, insts: Sequence[Instance]) -> list[cf.Future[Outcome]]:
        """Submit `insts` (one job array per distinct spec); one future per instance, in order."""
        futures: dict[str, cf.Future[Outcome]] = {i.key: cf.Future() for i in insts}
        groups: dict[str, list[Instance]] = {}
        specs: dict[str, SlurmSpec] = {}
        for inst in insts:
            spec = spec_for(inst.cell, self.settings.base)
            token = json.dumps(spec_json(spec), sort_keys=True) + inst.cell.full_name
            groups.setdefault(token, []).append(inst)
            specs[token] = spec
        for token, group in groups.items():
            spec = specs[token]
            try:
                jobs = self._submit(spec, group)
            except FurtherError as exc:  # sbatch refused every attempt: fail these instances
                for inst in group:
                    futures[inst.key].set_exception(exc)
                continue
            with self._lock:
                for inst, job in zip(group, jobs, strict=True):
                    self._tasks.append(_Task(inst, job, futures[inst.key], spec))
        self._start()
        return [futures[i.key] for i in insts]

    def _submit(self, spec: SlurmSpec, group: list[Instance]) -> list[SubmittedJob]:
        store = self.store
        name = f"further-{group[0].cell.name}"
        jobs: list[SubmittedJob] = []
        if self.settings.array:
            started = time.perf_counter()
            jobs = self.client.submit_batch(
                self.folder,
                spec,
                [(ensure_in_job, store, inst) for inst in group],
                job_name=name,
                python=self.settings.python,
            )
            self._submitted(group[0], jobs, time.perf_counter() - started, array=True)
        else:
            for inst in group:
                started = time.perf_counter()
                job = self.client.submit(
                    self.folder,
                    spec,
                    ensure_in_job,
                    store,
                    inst,
                    job_name=name,
                    python=self.settings.python,
                )
                jobs.append(job)
                self._submitted(inst, [job], time.perf_counter() - started, array=False)
        return jobs

    def _submitted(
        self, inst: Instance, jobs: list[SubmittedJob], seconds: float, *, array: bool
    ) -> None:
        ids = [j.job_id for j in jobs]
        self.submissions.append(ids)
        log.info(
            "submitted %d instance(s) of %s to Slurm in %.3fs: %s",
            len(ids),
            inst.cell.full_name,
            seconds,
            _id_range(ids),
        )
        if self.settings.on_submit is not None:
            self.settings.on_submit(Submission(inst.cell.full_name, ids, seconds, array))

    # --- watching -----------------------------------------------------------------------

    def _start(self) -> None:
        if self._thread is None and self._tasks:
            self._thread = threading.Thread(
                target=self._watch, name="further-slurm-watch", daemon=True
            )
            self._thread.start()

    def _pending(self) -> list[_Task]:
        with self._lock:
            return [t for t in self._tasks if not t.future.done()]

    def _watch(self) -> None:
        next_state = time.monotonic() + self.settings.state_every_s
        while not self._stop.is_set():
            pending = self._pending()
            if not pending:
                if self._stop.wait(self.settings.poll_s):
                    return
                continue
            for task in pending:
                self._resolve(task)
            if time.monotonic() >= next_state:
                self._check_states([t for t in pending if not t.future.done()])
                next_state = time.monotonic() + self.settings.state_every_s
            self._stop.wait(self.settings.poll_s)

    def _check_states(self, pending: list[_Task]) -> None:
        if not pending:
            return
        try:
            found = self.client.states(t.job.job_id for t in pending)
        except FurtherError as exc:  # sacct hiccup: try again next time
            log.warning("could not read Slurm job states: %s", exc)
            return
        for task in pending:
            state = found.get(task.job.job_id)
            if state is None or not states.is_ended(state):
                task.ended_seen = 0
                continue
            if self._resolve(task):
                continue
            task.ended_seen += 1
            if task.ended_seen >= 2:  # absorb a shared filesystem's lag on the result file
                task.future.set_exception(_ended_error(task, state))

    def _resolve(self, task: _Task) -> bool:
        """Settle the task's future from its result; False while there is none yet."""
        result: JobResult | None = self.client.result(task.job)
        if result is None:  # absent, or still being written: next poll
            return False
        if task.future.done():
            return True
        if result.ok:
            task.future.set_result(result.value)
        else:
            task.future.set_exception(_remote_error(task, result))
        return True

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop watching; with `cancel_futures`, scancel every task still pending."""
        pending = self._pending()
        if cancel_futures and pending:
            parents = sorted({t.job.array_id for t in pending})
            log.warning("cancelling Slurm job(s) %s", ", ".join(parents))
            for parent in parents:
                try:
                    self.client.cancel(parent)
                except FurtherError as exc:
                    log.error("%s", exc)
            for task in pending:
                task.future.cancel()
        self._stop.set()
        if wait and self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)

    def abort(self) -> None:
        """scancel what is pending and stop watching, without waiting (Ctrl-C)."""
        self.shutdown(wait=False, cancel_futures=True)

    def job_ids(self) -> list[str]:
        """Every job id (array tasks `<id>_<index>`) the pool submitted, in order."""
        with self._lock:
            return [t.job.job_id for t in self._tasks]


def _default_client() -> SlurmClient:
    from further_dagster.slurm.client import SubmititClient

    return SubmititClient()


def _logs(job: SubmittedJob) -> str:
    return f"{job.stdout} and {job.stderr}"


def _ended_error(task: _Task, state: str) -> SlurmJobError:
    limit = f", time limit {task.spec.time_min} min" if state == "TIMEOUT" else ""
    return SlurmJobError(
        f"{task.inst.label}: Slurm job {task.job.job_id} {states.explain(state)} without a "
        f"result; state {state}{limit}. Logs: {_logs(task.job)}"
    )


def _remote_error(task: _Task, result: JobResult) -> FurtherError:
    job_id, traceback_text = task.job.job_id, result.traceback
    if result.timed_out:
        return SlurmJobError(
            f"{task.inst.label}: Slurm job {job_id} {states.explain('TIMEOUT')}; time limit "
            f"{task.spec.time_min} min. Logs: {_logs(task.job)}"
        )
    last = next((ln for ln in reversed(traceback_text.strip().splitlines()) if ln.strip()), "")
    return CellComputeError(
        f"{task.inst.label} failed in Slurm job {job_id}: {last.strip()}\n"
        f"Remote traceback:\n{traceback_text.rstrip()}\nLogs: {_logs(task.job)}",
        cell=task.inst.cell.full_name,
        key=task.inst.key,
        remote_traceback=traceback_text,
    )


def _id_range(ids: list[str]) -> str:
    if len(ids) <= 3:
        return ", ".join(ids)
    return f"{ids[0]} .. {ids[-1]} ({len(ids)} tasks)"
