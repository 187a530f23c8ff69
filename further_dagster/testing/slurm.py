"""`FakeSlurmClient`: a stand-in for Slurm where a unit test needs no cluster.

It implements `further_dagster.slurm.SlurmClient` in memory. The tests against the real
single-node cluster (tests/slurm, `scripts/slurm-cluster`) stay: they are what shows that the
real client, sbatch and submitit behave as this fake claims.

What it does:
- records every accepted submission (`submissions`: folder, spec, job name, python, calls,
  job ids), every refused attempt (`refusals`) and every cancel (`cancelled`);
- hands out job ids from `first_id` up; a batch of several calls is one array whose tasks are
  `<id>_<index>` (a batch of one is a plain job, as submitit does);
- runs each call in a background thread, so `result(job)` appears as a real job's would, and
  reports PENDING, RUNNING, then COMPLETED or FAILED (`run=False`: jobs stay PENDING until
  `start()`);
- honours `dependency=` as Slurm does: a job starts once every `afterok` job (or array task,
  or whole array) is COMPLETED, task i of an `aftercorr` array once task i of the other is;
  a dependency that can no longer be met leaves the job PENDING until it is cancelled;

and what a test can script:
- `refuse(partition="gpu")`: sbatch refuses matching specs (the fallbacks are then tried);
- `set_state(job_id, "TIMEOUT")`: force a state; in a state in which Slurm kills the job
  (TIMEOUT, CANCELLED, OUT_OF_MEMORY, ...) it writes no result, as a killed job does;
- `hiccup()`: the next `state`/`states` call raises `SlurmJobError`, as when sacct fails.
"""

from __future__ import annotations

import threading
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from further_dagster.errors import SlurmJobError
from further_dagster.slurm import states
from further_dagster.slurm.client import (
    JobResult,
    SbatchRefused,
    SubmittedJob,
    submit_attempts,
)
from further_dagster.slurm.dependency import Dependency
from further_dagster.slurm.spec import SlurmSpec

__all__ = ["FakeCall", "FakeSlurmClient", "FakeSubmission"]

_REFUSAL = (
    "sbatch: error: Batch job submission failed: Requested node configuration is not available"
)
# Ended states in which the job ran to its end and wrote its own result.
_OWN_END = frozenset({"COMPLETED", "FAILED"})


@dataclass(frozen=True)
class FakeCall:
    """One submitted call: `fn(*args, **kwargs)`."""

    fn: Callable[..., Any]
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class FakeSubmission:
    """One accepted sbatch call: `spec` is the attempt that was accepted."""

    folder: Path
    spec: SlurmSpec
    job_name: str
    python: str | None
    calls: tuple[FakeCall, ...]
    job_ids: tuple[str, ...]
    array: bool
    dependency: Dependency | None = None


@dataclass
class _Job:
    job: SubmittedJob
    call: FakeCall
    state: str = "PENDING"
    forced: str | None = None
    result: JobResult | None = None
    thread: threading.Thread | None = None
    waits_for: tuple[str, ...] = ()  # job / task / array ids that must all be COMPLETED
    released: bool = False  # start() or run=True: runs once what it waits for completed

    @property
    def reported(self) -> str:
        return self.forced or self.state

    @property
    def killed(self) -> bool:
        return (
            self.forced is not None
            and states.is_ended(self.forced)
            and (self.forced not in _OWN_END)
        )


class FakeSlurmClient:
    """A `SlurmClient` without Slurm (see the module docstring).

    Args:
        run: run each call in a thread as soon as it is submitted (False: jobs stay PENDING
            until `start()`, e.g. when the call would start a real run worker).
        first_id: the first job id handed out.
    """

    def __init__(self, *, run: bool = True, first_id: int = 1000) -> None:
        self.run = run
        self.submissions: list[FakeSubmission] = []
        self.refusals: list[tuple[str, SlurmSpec, str]] = []  # job name, attempt, message
        self.cancelled: list[str] = []
        self._next_id = first_id
        self._jobs: dict[str, _Job] = {}
        self._rules: list[tuple[dict[str, Any], str]] = []
        self._hiccups = 0
        self._lock = threading.RLock()

    # --- scripting ------------------------------------------------------------------------

    def refuse(self, message: str = _REFUSAL, **fields: Any) -> None:
        """Refuse every attempt whose fields equal `fields` (none given: refuse all)."""
        unknown = sorted(set(fields) - set(SlurmSpec.model_fields))
        if unknown:
            raise TypeError(f"refuse() got unknown SlurmSpec field(s) {unknown}")
        self._rules.append((fields, message))

    def set_state(self, job_id: str, state: str) -> None:
        """Force the state Slurm reports for `job_id` (a job or an array task) from now on."""
        with self._lock:
            self._record(job_id).forced = state
        self._release()

    def hiccup(self, times: int = 1) -> None:
        """Make the next `times` calls of `state`/`states` raise `SlurmJobError`."""
        self._hiccups += times

    def start(self, job_id: str | None = None) -> None:
        """Run a PENDING job's call (None: every PENDING job's), as with `run=True`."""
        with self._lock:
            records = list(self._jobs.values()) if job_id is None else [self._record(job_id)]
            for record in records:
                record.released = True
        self._release()

    def join(self, timeout_s: float = 10.0) -> None:
        """Wait for every started call to return (a test's clean-up)."""
        with self._lock:
            threads = [r.thread for r in self._jobs.values() if r.thread is not None]
        for thread in threads:
            thread.join(timeout_s)

    @property
    def job_ids(self) -> list[str]:
        """Every job id handed out, in order."""
        with self._lock:
            return list(self._jobs)

    # --- SlurmClient ----------------------------------------------------------------------

    def submit(
        self,
        folder: str | Path,
        spec: SlurmSpec,
        fn: Callable[..., Any],
        /,
        *args: Any,
        job_name: str = "submitit",
        python: str | None = None,
        dependency: Dependency | None = None,
        **kwargs: Any,
    ) -> SubmittedJob:
        """Record and start one job, `spec` first, then its fallbacks."""
        call = FakeCall(fn, args, dict(kwargs))
        (job,) = self._submit(
            Path(folder), spec, [call], job_name, python, array=False, dependency=dependency
        )
        return job

    def submit_batch(
        self,
        folder: str | Path,
        spec: SlurmSpec,
        calls: Sequence[tuple[Any, ...]],
        *,
        job_name: str = "submitit",
        python: str | None = None,
        dependency: Dependency | None = None,
    ) -> list[SubmittedJob]:
        """Record and start one array (one call: a plain job), with fallbacks."""
        for call in calls:
            if not call or not callable(call[0]):
                raise TypeError(f"each call must be a (fn, *args) tuple, got {call!r}")
        if not calls:
            return []
        fake_calls = [FakeCall(call[0], tuple(call[1:])) for call in calls]
        return self._submit(
            Path(folder), spec, fake_calls, job_name, python, array=True, dependency=dependency
        )

    def state(self, job_id: str) -> str:
        """The job's state; an array's parent id summarises its tasks; unknown: UNKNOWN."""
        self._maybe_hiccup(job_id)
        with self._lock:
            found = self._matching(job_id)
            if job_id in self._jobs:
                return self._jobs[job_id].reported
            return states.summarize(r.reported for r in found)

    def states(self, job_ids: Iterable[str]) -> dict[str, str]:
        """JobID -> state; a parent id lists its tasks; unknown ids are absent."""
        ids = sorted({str(j) for j in job_ids})
        self._maybe_hiccup(",".join(ids))
        with self._lock:
            return {r.job.job_id: r.reported for j in ids for r in self._matching(j)}

    def cancel(self, job_id: str) -> None:
        """Record the cancel; every live job it names becomes CANCELLED."""
        with self._lock:
            self.cancelled.append(str(job_id))
            for record in self._matching(str(job_id)):
                if states.is_live(record.reported):
                    record.forced = "CANCELLED"
        self._release()

    def result(self, job: SubmittedJob) -> JobResult | None:
        """The call's result once it returned or raised (None for a killed job)."""
        with self._lock:
            record = self._jobs.get(job.job_id)
            if record is None or record.killed:
                return None
            return record.result

    def job(self, folder: str | Path, job_id: str) -> SubmittedJob:
        """The files a submitit job would write, by submitit's names (nothing is written)."""
        base = Path(folder).expanduser().absolute()
        array_id = str(job_id).split("_")[0]
        script = f"{array_id if '_' in str(job_id) else job_id}_submission.sh"
        return SubmittedJob(
            job_id=str(job_id),
            folder=base,
            stdout=base / f"{job_id}_0_log.out",
            stderr=base / f"{job_id}_0_log.err",
            result_file=base / f"{job_id}_0_result.pkl",
            submission_file=base / script,
        )

    # --- internals ------------------------------------------------------------------------

    def _submit(
        self,
        folder: Path,
        spec: SlurmSpec,
        calls: list[FakeCall],
        job_name: str,
        python: str | None,
        *,
        array: bool,
        dependency: Dependency | None,
    ) -> list[SubmittedJob]:
        def sbatch(attempt: SlurmSpec) -> list[_Job]:
            for fields, message in self._rules:
                if all(getattr(attempt, k) == v for k, v in fields.items()):
                    self.refusals.append((job_name, attempt, message))
                    raise SbatchRefused(message)
            return self._accept(
                folder, attempt, calls, job_name, python, array=array, dependency=dependency
            )

        records = submit_attempts(spec, job_name, sbatch)
        if self.run:
            with self._lock:
                for record in records:
                    record.released = True
            self._release()
        return [r.job for r in records]

    def _accept(
        self,
        folder: Path,
        spec: SlurmSpec,
        calls: list[FakeCall],
        job_name: str,
        python: str | None,
        *,
        array: bool,
        dependency: Dependency | None,
    ) -> list[_Job]:
        with self._lock:
            parent = str(self._next_id)
            self._next_id += 1
            as_array = array and len(calls) > 1
            ids = [f"{parent}_{i}" for i in range(len(calls))] if as_array else [parent]
            records = []
            for index, (job_id, call) in enumerate(zip(ids, calls, strict=True)):
                waits = dependency.afterok if dependency else ()
                if dependency is not None:  # task i of this array after task i of each
                    waits += tuple(f"{other}_{index}" for other in dependency.aftercorr)
                records.append(_Job(self.job(folder, job_id), call, waits_for=waits))
            for record in records:
                self._jobs[record.job.job_id] = record
            self.submissions.append(
                FakeSubmission(
                    folder,
                    spec,
                    job_name,
                    python,
                    tuple(calls),
                    tuple(ids),
                    as_array,
                    dependency or None,
                )
            )
            return records

    def _release(self) -> None:
        """Start every released PENDING job whose dependencies have all COMPLETED."""
        with self._lock:
            ready = [
                r
                for r in self._jobs.values()
                if r.released
                and r.state == "PENDING"
                and r.forced is None
                and all(o.reported == "COMPLETED" for w in r.waits_for for o in self._matching(w))
            ]
        for record in ready:
            self._start(record)

    def _start(self, record: _Job) -> None:
        with self._lock:
            if record.state != "PENDING" or record.forced is not None:
                return
            record.state = "RUNNING"
            thread = threading.Thread(
                target=self._execute,
                args=(record,),
                name=f"fake-slurm-{record.job.job_id}",
                daemon=True,
            )
            record.thread = thread
        thread.start()

    def _execute(self, record: _Job) -> None:
        call = record.call
        try:
            value = call.fn(*call.args, **call.kwargs)
        except BaseException:  # what submitit's result pickle holds: the remote traceback
            outcome, state = JobResult(ok=False, traceback=traceback.format_exc()), "FAILED"
        else:
            outcome, state = JobResult(ok=True, value=value), "COMPLETED"
        with self._lock:
            record.result, record.state = outcome, state
        self._release()

    def _record(self, job_id: str) -> _Job:
        record = self._jobs.get(str(job_id))
        if record is None:
            raise KeyError(f"the fake Slurm handed out no job {job_id!r}; it has {self.job_ids}")
        return record

    def _matching(self, job_id: str) -> list[_Job]:
        """The job `job_id`, or every task of the array it is the parent of."""
        if job_id in self._jobs:
            return [self._jobs[job_id]]
        return [r for jid, r in self._jobs.items() if jid.split("_")[0] == job_id and "_" in jid]

    def _maybe_hiccup(self, what: str) -> None:
        with self._lock:
            if self._hiccups <= 0:
                return
            self._hiccups -= 1
        raise SlurmJobError(f"sacct -j {what} failed: (fake) slurmdbd is not answering")
