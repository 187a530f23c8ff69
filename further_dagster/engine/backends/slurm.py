"""The SLURM backend: a static chapter goes to Slurm in one pass, as job arrays chained by
Slurm's own dependencies.

`run_missing` hands the pool each static chapter of missing SLURM-mode instances
(`submit_graph`): every instance of it is submitted at once, level by level (a level's
instances depend only on earlier levels), one `SlurmClient.submit_batch` (one sbatch, one job
array, one task per instance) per distinct merged `SlurmSpec` and dependency: instances whose
only in-flight dependency is task i of one array, for i = 0..m-1, form an array with
`--dependency=aftercorr:<that array>` (task i starts when task i there completed); others are
grouped by the exact set of tasks they wait for (`afterok:<tasks>`, `afterok:<array>` for a
whole array). Slurm then starts each task when its inputs are stored, without a round trip
through this process per wave. A task that fails cancels the tasks waiting on it (they could
never start); their futures raise `Blocked`, and the scheduler counts them as blocked by that
failure. With `SlurmSettings(dependencies=False)` the pool takes one wave of ready instances at
a time (`submit_many`, the baseline the bench compares against), one array per spec.

A task runs `slurm_task.run_task` in a fresh interpreter that imports the cells' modules and
never the package that calls `build_definitions` (see slurm_task.py), so it costs a Python start
plus make(); the result goes to the shared store, and the pool only learns that the task ended:

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
from further_dagster.engine.backends import Blocked, thin
from further_dagster.engine.backends.slurm_task import payload_for, run_task
from further_dagster.errors import CellComputeError, FurtherError, SlurmJobError
from further_dagster.slurm import Dependency, SlurmSpec, merge, states
from further_dagster.store import Outcome, Store

if TYPE_CHECKING:
    from further_dagster.slurm.client import JobResult, SlurmClient, SubmittedJob

__all__ = [
    "SlurmPool",
    "SlurmSettings",
    "Submission",
    "cell_spec",
    "spec_for",
]

log = logging.getLogger("further")


@dataclass(frozen=True)
class Submission:
    """One sbatch call of the pool: which cells (full names, ", "-joined when instances of
    several cells share the array), which job ids (array tasks `<id>_<index>`), how long
    submitting took, and the instance keys of its tasks (in the order of `job_ids`), so that a
    caller running several Dagster steps in one pass can tell each step its own jobs."""

    cell: str
    job_ids: list[str]
    seconds: float
    array: bool
    keys: tuple[str, ...] = ()


@dataclass(frozen=True)
class SlurmSettings:
    """How the engine submits SLURM-mode instances.

    Attributes:
        folder: submitit folder (job pickles, sbatch files, logs); every node must see it.
            None: `<store root>/.slurm/<unique>` per pool, so a restarted cluster that reuses
            job ids never reads an old result file.
        base: the spec layers below each cell's own `slurm` (launcher defaults < executor
            run config), already merged.
        array: job arrays (True), or one sbatch per instance (False: the baseline the bench
            compares against; no dependencies either).
        dependencies: a static chapter in one pass with Slurm's dependencies between its
            arrays (True), or one wave of ready instances at a time (False: the baseline).
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
    dependencies: bool = True
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


@dataclass
class _Task:
    inst: Instance
    job: SubmittedJob
    future: cf.Future[Outcome]
    spec: SlurmSpec
    ended_seen: int = 0  # state polls that found the task ended without a result file
    waiting: list[_Task] = field(default_factory=list)  # tasks whose dependency names this one


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
        self._by_key: dict[str, _Task] = {}
        self._array_size: dict[str, int] = {}  # array id -> tasks
        self._modules: dict[type, set[str]] = {}  # cell -> the modules its instances need
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # cf.Executor's single-call API, for completeness (run_missing uses submit_many)
    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> cf.Future[Any]:
        raise TypeError("SlurmPool runs instances: use submit_many([instance, ...])")

    @property
    def graph_threshold(self) -> int | None:
        """Any static chapter goes in one pass (None: one wave at a time)."""
        return 1 if self.settings.dependencies and self.settings.array else None

    def in_flight(self, key: str) -> bool:
        task = self._by_key.get(key)
        return task is not None and not _failed(task.future)

    def submit_many(self, insts: Sequence[Instance]) -> list[cf.Future[Outcome]]:
        """Submit `insts` (one job array per distinct spec); one future per instance, in order."""
        futures: dict[str, cf.Future[Outcome]] = {i.key: cf.Future() for i in insts}
        for spec, group in self._by_spec(insts):
            self._submit_group(spec, group, futures, None, {})
        self._start()
        return [futures[i.key] for i in insts]

    def submit_graph(self, insts: Sequence[Instance]) -> list[cf.Future[Outcome]]:
        """Submit a static chapter in one pass (see the module docstring)."""
        futures: dict[str, cf.Future[Outcome]] = {i.key: cf.Future() for i in insts}
        level: dict[str, int] = {}
        for inst in insts:  # dependencies first
            level[inst.key] = 1 + max(
                (level[d.key] for d in inst.dep_instances() if d.key in level), default=-1
            )
        # in each array, what a later level waits for comes first: tasks 0..m-1 of it can
        # then be waited for task by task (aftercorr)
        needed = {d.key for inst in insts for d in inst.dep_instances() if d.key in level}
        levels: dict[int, list[Instance]] = {}
        for inst in sorted(insts, key=lambda i: i.key not in needed):
            levels.setdefault(level[inst.key], []).append(inst)
        for number in sorted(levels):
            for spec, group in self._by_spec(levels[number]):
                waits = self._waits(group, futures)
                for members, dependency in self._by_dependency(group, waits):
                    self._submit_group(spec, members, futures, dependency, waits)
        self._start()
        return [futures[i.key] for i in insts]

    def _by_spec(self, insts: Sequence[Instance]) -> list[tuple[SlurmSpec, list[Instance]]]:
        groups: dict[str, tuple[SlurmSpec, list[Instance]]] = {}
        for inst in insts:
            spec = spec_for(inst.cell, self.settings.base)
            token = json.dumps(spec_json(spec), sort_keys=True)
            groups.setdefault(token, (spec, []))[1].append(inst)
        return list(groups.values())

    def _waits(
        self, group: list[Instance], futures: dict[str, cf.Future[Outcome]]
    ) -> dict[str, list[_Task]]:
        """Member key -> the submitted tasks it must wait for (in flight). A member with a
        dependency that failed, or was never submitted, is blocked here and never submitted."""
        waits: dict[str, list[_Task]] = {}
        for inst in group:
            pending: list[_Task] = []
            for dep in inst.dep_instances():
                task = self._by_key.get(dep.key)
                if task is None:
                    if dep.key in futures:  # in this chapter, and never submitted: blocked
                        pending = []
                        futures[inst.key].set_exception(Blocked())
                        break
                    continue  # stored before the run
                if _failed(task.future):
                    futures[inst.key].set_exception(Blocked())
                    break
                if task.future.done():
                    continue  # its result is stored
                pending.append(task)
            if not futures[inst.key].done():
                waits[inst.key] = pending
        return waits

    def _by_dependency(
        self, group: list[Instance], waits: dict[str, list[_Task]]
    ) -> list[tuple[list[Instance], Dependency | None]]:
        """The members of `group` (one level, one spec) not blocked, split by what they wait
        for in Slurm (see the module docstring)."""
        members = [i for i in group if i.key in waits]
        out: list[tuple[list[Instance], Dependency | None]] = []
        # aftercorr: each member waits for exactly one task, task i of one array, for every i
        by_array: dict[str, list[tuple[int, Instance]]] = {}
        for inst in members:
            pending = waits[inst.key]
            if len(pending) == 1 and "_" in pending[0].job.job_id:
                array, index = pending[0].job.job_id.split("_")
                by_array.setdefault(array, []).append((int(index), inst))
        corr: set[str] = set()
        for array, indexed in by_array.items():
            # task i here waits for task i there: the members must be tasks 0..m-1 there
            if len(indexed) > 1 and sorted(i for i, _ in indexed) == list(range(len(indexed))):
                ordered = [inst for _, inst in sorted(indexed, key=lambda pair: pair[0])]
                out.append((ordered, Dependency(aftercorr=(array,))))
                corr.update(i.key for i in ordered)
        # afterok: grouped by the exact tasks waited for (whole arrays named by their id)
        by_waits: dict[tuple[str, ...], list[Instance]] = {}
        for inst in members:
            if inst.key not in corr:
                ids = tuple(sorted({t.job.job_id for t in waits[inst.key]}))
                by_waits.setdefault(ids, []).append(inst)
        for ids, grouped in by_waits.items():
            out.append((grouped, Dependency(afterok=self._compress(ids)) if ids else None))
        return out

    def _compress(self, ids: tuple[str, ...]) -> tuple[str, ...]:
        """Task ids, each whole array written as its id."""
        tasks: dict[str, set[str]] = {}
        for job_id in ids:
            tasks.setdefault(job_id.split("_")[0], set()).add(job_id)
        out: list[str] = []
        for array, found in tasks.items():
            whole = array in found or len(found) == self._array_size.get(array, 0)
            out.extend([array] if whole else sorted(found))
        return tuple(out)

    def _submit_group(
        self,
        spec: SlurmSpec,
        group: list[Instance],
        futures: dict[str, cf.Future[Outcome]],
        dependency: Dependency | None,
        waits: dict[str, list[_Task]],
    ) -> None:
        """Submit one array; each task is registered with the tasks it waits for (`waits`), so
        that a failure there cancels it."""
        try:
            jobs = self._submit(spec, group, dependency)
        except FurtherError as exc:  # sbatch refused every attempt: fail these instances
            for inst in group:
                futures[inst.key].set_exception(exc)
            return
        with self._lock:
            if len(jobs) > 1:
                self._array_size[jobs[0].array_id] = len(jobs)
            for inst, job in zip(group, jobs, strict=True):
                task = _Task(inst, job, futures[inst.key], spec)
                self._tasks.append(task)
                self._by_key[inst.key] = task
                for waited in waits.get(inst.key, ()):
                    waited.waiting.append(task)
            waited_for = {w.job.job_id: w for i in group for w in waits.get(i.key, ())}
            ended = [w for w in waited_for.values() if _failed(w.future)]
        for waited in ended:  # failed while this group was being submitted
            self._cancel_waiting(waited)

    def _submit(
        self, spec: SlurmSpec, group: list[Instance], dependency: Dependency | None = None
    ) -> list[SubmittedJob]:
        store = self.store
        cells = sorted({i.cell.name for i in group})
        name = "further-" + ("+".join(cells) if len(cells) <= 3 else f"{len(cells)}cells")
        jobs: list[SubmittedJob] = []
        if self.settings.array:
            started = time.perf_counter()
            jobs = self.client.submit_batch(
                self.folder,
                spec,
                [(run_task, self._payload(store, inst)) for inst in group],
                job_name=name,
                python=self.settings.python,
                dependency=dependency,
            )
            self._submitted(group, jobs, time.perf_counter() - started, array=True)
        else:
            for inst in group:
                started = time.perf_counter()
                job = self.client.submit(
                    self.folder,
                    spec,
                    run_task,
                    self._payload(store, inst),
                    job_name=name,
                    python=self.settings.python,
                    dependency=dependency,
                )
                jobs.append(job)
                self._submitted([inst], [job], time.perf_counter() - started, array=False)
        return jobs

    def _payload(self, store: Store, inst: Instance) -> Any:
        modules = self._modules.get(inst.cell)
        if modules is None:
            modules = {inst.cell.__module__}
            stack = list(inst.dep_instances())
            seen: set[str] = set()
            while stack:  # the instance pickles its upstream too: their cells' modules
                dep = stack.pop()
                if dep.key not in seen:
                    seen.add(dep.key)
                    modules.add(dep.cell.__module__)
                    stack.extend(dep.dep_instances())
            modules.discard("__main__")
            self._modules[inst.cell] = modules
        return payload_for(store, thin(inst), modules)

    def _submitted(
        self, group: list[Instance], jobs: list[SubmittedJob], seconds: float, *, array: bool
    ) -> None:
        ids = [j.job_id for j in jobs]
        self.submissions.append(ids)
        cells = ", ".join(dict.fromkeys(i.cell.full_name for i in group))
        log.info(
            "submitted %d instance(s) of %s to Slurm in %.3fs: %s",
            len(ids),
            cells,
            seconds,
            _id_range(ids),
        )
        if self.settings.on_submit is not None:
            keys = tuple(i.key for i in group)
            self.settings.on_submit(Submission(cells, ids, seconds, array, keys))

    def _fail(self, task: _Task, error: BaseException) -> None:
        """Fail the task, and cancel every task waiting on it (it never starts now)."""
        if not task.future.done():
            task.future.set_exception(error)
        self._cancel_waiting(task)

    def _cancel_waiting(self, task: _Task) -> None:
        with self._lock:
            pending = [t for t in task.waiting if not t.future.done()]
        for waiting in pending:
            try:
                self.client.cancel(waiting.job.job_id)
            except FurtherError as exc:
                log.error("%s", exc)
            self._fail(waiting, Blocked())

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
                self._fail(task, _ended_error(task, state))

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
            self._fail(task, _remote_error(task, result))
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


def _failed(future: cf.Future[Outcome]) -> bool:
    return future.done() and (future.cancelled() or future.exception() is not None)


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
