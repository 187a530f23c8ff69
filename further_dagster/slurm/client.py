"""The Slurm client: submit (with fallbacks), job arrays, states, cancel, results.

`SlurmClient` is what the engine's Slurm pool, the run launcher and the step handler talk to;
they take one at their constructor. `SubmititClient` is the real one (submitit + `squeue`,
`sacct`, `scancel`, for the cluster named by `SLURM_CONF`; the project's test cluster:
`eval "$(scripts/slurm-cluster env)"`). `further_dagster.testing.slurm.FakeSlurmClient`
stands in where a unit test needs no cluster. No submitit object leaves this layer: a job is a
`SubmittedJob`, a result a `JobResult`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable

from further_dagster.errors import SlurmJobError, SlurmSubmissionError
from further_dagster.slurm import _submitit, states
from further_dagster.slurm.dependency import Dependency
from further_dagster.slurm.render import submitit_parameters
from further_dagster.slurm.spec import SlurmSpec

__all__ = [
    "JobResult",
    "SbatchRefused",
    "SlurmClient",
    "SubmititClient",
    "SubmittedJob",
    "describe_job_end",
    "make_executor",
    "submit_attempts",
]

T = TypeVar("T")
_log = logging.getLogger(__name__)
_HINT = 'Is Slurm installed and SLURM_CONF set? (test cluster: eval "$(scripts/slurm-cluster env)")'


@dataclass(frozen=True)
class SubmittedJob:
    """A job (or one array task, id `<array id>_<index>`) and the files it writes.

    Attributes:
        job_id: Slurm's id.
        folder: the submission folder.
        stdout: the job's standard output log.
        stderr: the job's standard error log.
        result_file: where the job's result appears when its function returns or raises.
        submission_file: the sbatch script (one per array).
    """

    job_id: str
    folder: Path
    stdout: Path
    stderr: Path
    result_file: Path
    submission_file: Path

    @property
    def array_id(self) -> str:
        """The parent id of an array task; the job id itself for a plain job."""
        return self.job_id.split("_")[0]


@dataclass(frozen=True)
class JobResult:
    """What a job's function did.

    Attributes:
        ok: it returned `value`.
        value: the return value.
        traceback: when it raised, the remote traceback text.
        timed_out: it did not finish: the job reached its time limit (submitit stopped it).
    """

    ok: bool
    value: Any = None
    traceback: str = ""
    timed_out: bool = False


@runtime_checkable
class SlurmClient(Protocol):
    """Everything the package asks of Slurm."""

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
        """Submit `fn(*args, **kwargs)` as one job: `spec`, then each fallback sbatch accepts;
        with `dependency`, the job waits for those jobs (`--dependency`).

        Raises:
            SlurmSubmissionError: sbatch refused every attempt (each one listed with its error).
        """
        ...

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
        """Submit `(fn, *args)` calls as ONE job array (one call: a plain job), with fallbacks;
        with `dependency`, every task waits for those jobs (aftercorr: task i for task i).

        Returns:
            One job per call, in order; array task ids are `<array id>_<index>`.
        """
        ...

    def state(self, job_id: str) -> str:
        """One job's state ("PENDING", "RUNNING", ..., `states.UNKNOWN` when nobody knows it);
        an array's parent id gives the most telling task state (`states.summarize`)."""
        ...

    def states(self, job_ids: Iterable[str]) -> dict[str, str]:
        """JobID -> state for many jobs and array tasks at once; unknown ids are absent."""
        ...

    def cancel(self, job_id: str) -> None:
        """Cancel a job, or a whole array by its parent id; an ended job is not an error."""
        ...

    def result(self, job: SubmittedJob) -> JobResult | None:
        """The job's result; None while there is none (running, killed, or half-written)."""
        ...

    def job(self, folder: str | Path, job_id: str) -> SubmittedJob:
        """The files of job `job_id` submitted into `folder` (e.g. from a run tag)."""
        ...


class SbatchRefused(Exception):
    """sbatch refused one attempt; the message is sbatch's own error."""


def submit_attempts(spec: SlurmSpec, job_name: str, submit: Callable[[SlurmSpec], T]) -> T:
    """`submit(attempt)` for each of `spec.attempts()` until one is not refused.

    Every client submits through this, so fallbacks and the refusal message are the same
    whichever client is injected.

    Raises:
        SlurmSubmissionError: every attempt raised `SbatchRefused`; lists each with its error.
    """
    refusals: list[tuple[SlurmSpec, str]] = []
    for attempt in spec.attempts():
        try:
            submitted = submit(attempt)
        except SbatchRefused as exc:
            refusals.append((attempt, str(exc)))
            _log.info("sbatch refused %s for %r: %s", _describe(attempt), job_name, exc)
            continue
        if refusals:
            _log.warning(
                "sbatch accepted fallback %s for %r after %d refusal(s)",
                _describe(attempt),
                job_name,
                len(refusals),
            )
        return submitted
    lines = [f"sbatch refused every attempt to submit {job_name!r} ({len(refusals)}):"]
    for number, (attempt, message) in enumerate(refusals, start=1):
        lines.append(f"  {number}. {_describe(attempt)}")
        lines.extend(f"       {line}" for line in message.splitlines())
    lines.append(
        "Ask for less (cpus, mem_gb, gpus, time_min), another partition, or add a fitting spec "
        "to `fallbacks`; `sinfo -o '%P %c %m %G %l'` shows what each partition offers."
    )
    raise SlurmSubmissionError("\n".join(lines))


def _describe(spec: SlurmSpec) -> str:
    fields = spec.model_dump(exclude={"fallbacks"})
    if not fields["extra"]:
        del fields["extra"]
    return " ".join(f"{name}={value!r}" for name, value in fields.items())


def describe_job_end(
    client: SlurmClient, job_id: str, state: str, folder: str | Path, *, what: str
) -> str:
    """Why a job ended: its id, what it ran, the state explained, and its log files.

    Args:
        client: the client that submitted it (for its files and result).
        job_id: the job.
        state: the state it ended in.
        folder: the folder it was submitted into.
        what: what the job ran, e.g. "step fit" (completes "Slurm job 12 for ...").
    """
    job = client.job(folder, job_id)
    detail = ""
    try:
        result = client.result(job)
    except Exception:  # the message is best effort: an unreadable result must not hide the end
        result = None
    if result is not None and not result.ok and result.traceback.strip():
        detail = result.traceback.strip().splitlines()[-1].strip()
    if result is not None and result.timed_out:
        explanation, detail = states.explain("TIMEOUT"), ""
    else:
        explanation = states.explain(state)
    reason = f": {detail}" if detail else ""
    return (
        f"Slurm job {job_id} for {what} {explanation}{reason}; state {state}; "
        f"logs: {job.stdout} and {job.stderr}"
    )


# --- the real client ----------------------------------------------------------------------


def make_executor(
    folder: str | Path,
    spec: SlurmSpec,
    *,
    job_name: str = "submitit",
    python: str | None = None,
    dependency: Dependency | None = None,
) -> _submitit.AutoExecutor:
    """A submitit `AutoExecutor` on Slurm configured from `spec` (fallbacks ignored).

    For this layer and its tests only: the rest of the package talks to a `SlurmClient`.

    Raises:
        SlurmSubmissionError: Slurm's commands are not available here.
    """
    try:
        executor = _submitit.auto_executor(folder, python=python)
    except RuntimeError as exc:  # 'Could not detect "srun", are you indeed on a slurm cluster?'
        raise SlurmSubmissionError(f"cannot submit to Slurm: {exc}. {_HINT}") from exc
    executor.update_parameters(name=job_name, **submitit_parameters(spec, dependency))
    return executor


class SubmititClient:
    """The real `SlurmClient`: submitit for submission, Slurm's commands for states.

    Folders must be on a filesystem every node sees; use a fresh one per cluster lifetime (a
    restarted test cluster reuses job ids, and an old result file would be read back).
    """

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
        """See `SlurmClient.submit`."""

        def one(attempt: SlurmSpec) -> SubmittedJob:
            executor = make_executor(
                folder, attempt, job_name=job_name, python=python, dependency=dependency
            )
            with _refusals(), _outside_job_env():
                job = executor.submit(fn, *args, **kwargs)
            return self.job(folder, job.job_id)

        return submit_attempts(spec, job_name, one)

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
        """See `SlurmClient.submit_batch` (submitit's `executor.batch()`)."""
        _check_calls(calls)
        if not calls:
            return []

        def all_of_them(attempt: SlurmSpec) -> list[SubmittedJob]:
            executor = make_executor(
                folder, attempt, job_name=job_name, python=python, dependency=dependency
            )
            with _refusals(), _outside_job_env(), executor.batch():
                jobs = [executor.submit(call[0], *call[1:]) for call in calls]
            return [self.job(folder, job.job_id) for job in jobs]

        return submit_attempts(spec, job_name, all_of_them)

    def job(self, folder: str | Path, job_id: str) -> SubmittedJob:
        """See `SlurmClient.job` (submitit's layout: `<folder>/<id>_0_log.out`, ...)."""
        paths = _submitit.JobPaths(folder, job_id=str(job_id), task_id=0)
        return SubmittedJob(
            job_id=str(job_id),
            folder=paths.folder,
            stdout=paths.stdout,
            stderr=paths.stderr,
            result_file=paths.result_pickle,
            submission_file=paths.submission_file,
        )

    def result(self, job: SubmittedJob) -> JobResult | None:
        """See `SlurmClient.result` (one `stat` while there is no result file)."""
        read = _submitit.read_result(job.result_file)
        if read is None:
            return None
        ok, value = read
        if ok:
            return JobResult(ok=True, value=value)
        return JobResult(ok=False, traceback=value, timed_out=_submitit.is_timeout(value))

    def state(self, job_id: str) -> str:
        """See `SlurmClient.state`.

        Asked first of slurmctld (`squeue -t all`), which holds a job until MinJobAge after it
        ends and is ahead of accounting (sacct showed a started job as PENDING for up to ~4.5 s
        here), then of accounting (`sacct`).

        Raises:
            SlurmJobError: sacct failed.
        """
        job_id = str(job_id)
        found = _controller_states(job_id) or self.accounting_states(job_id)
        if job_id in found:
            return found[job_id]
        return states.summarize(found.values())

    def states(self, job_ids: Iterable[str]) -> dict[str, str]:
        """See `SlurmClient.states`.

        Array tasks are listed one by one (`123_4`), pending ones included (`squeue -r`), from
        slurmctld; ids it no longer holds (purged after MinJobAge) are asked of accounting.

        Raises:
            SlurmJobError: sacct failed.
        """
        ids = sorted({str(j) for j in job_ids})
        if not ids:
            return {}
        done = _run(["squeue", "-h", "-r", "-t", "all", "-j", ",".join(ids), "-o", "%i|%T"])
        found = _parse_states(done.stdout) if done.returncode == 0 else {}
        parents = {jid.split("_")[0] for jid in found}
        missing = [j for j in ids if j.split("_")[0] not in parents]
        for job_id in missing if done.returncode == 0 else ids:
            for jid, state in self.accounting_states(job_id).items():
                found.setdefault(jid, state)
        return found

    def accounting_states(self, job_id: str) -> dict[str, str]:
        """Accounting's state of a job, or of every task of an array (`sacct -X`).

        Returns:
            JobID -> state (first word: "CANCELLED by 0" -> "CANCELLED"); empty when
            accounting has no record of it yet.

        Raises:
            SlurmJobError: sacct failed (e.g. slurmdbd unreachable).
        """
        done = _run(["sacct", "-j", str(job_id), "-X", "-n", "-P", "-o", "JobID,State"])
        if done.returncode != 0:
            raise SlurmJobError(f"sacct -j {job_id} failed: {done.stderr.strip()}. {_HINT}")
        return {jid: state.split()[0] for jid, state in _parse_states(done.stdout).items()}

    def cancel(self, job_id: str) -> None:
        """See `SlurmClient.cancel` (`scancel`).

        Raises:
            SlurmJobError: scancel failed for another reason than the job having ended.
        """
        done = _run(["scancel", str(job_id)])
        message = (done.stderr + done.stdout).strip()
        if done.returncode == 0 and "error" not in message.lower():
            return
        harmless = ("already completing or completed", "invalid job id")
        if any(text in message.lower() for text in harmless):
            return
        raise SlurmJobError(f"scancel {job_id} failed (exit {done.returncode}): {message}. {_HINT}")


def _check_calls(calls: Sequence[tuple[Any, ...]]) -> None:
    for call in calls:
        if not call or not callable(call[0]):
            raise TypeError(f"each call must be a (fn, *args) tuple, got {call!r}")


@contextlib.contextmanager
def _refusals() -> Iterator[None]:
    """submitit's "sbatch refused" errors as `SbatchRefused`; any other error passes."""
    try:
        yield
    except Exception as exc:
        message = _submitit.refusal_message(exc)
        if message is None:
            raise
        raise SbatchRefused(message) from exc


# Variables a job inherits from the job it was submitted from: Slurm sets them for the outer job,
# and srun inside the new job would read them (e.g. SLURM_MEM_PER_CPU of the outer job clashes
# with --mem of the new one). SLURM_CONF names the cluster and stays.
_JOB_ENV_PREFIXES = ("SLURM_", "SLURMD_", "SRUN_", "SUBMITIT_")
_KEEP_ENV = frozenset({"SLURM_CONF"})
_ENV_LOCK = threading.Lock()


@contextlib.contextmanager
def _outside_job_env() -> Iterator[None]:
    """Inside a Slurm job, hide the job's own SLURM_* variables while sbatch runs (as
    `submitit.helpers.clean_env` does, but keeping SLURM_CONF); outside a job, do nothing."""
    if "SLURM_JOB_ID" not in os.environ:
        yield
        return
    with _ENV_LOCK:
        hidden = {
            name: os.environ.pop(name)
            for name in list(os.environ)
            if name.startswith(_JOB_ENV_PREFIXES) and name not in _KEEP_ENV
        }
        try:
            yield
        finally:
            os.environ.update(hidden)


def _run(command: list[str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    except FileNotFoundError as exc:
        raise SlurmJobError(f"cannot run {command[0]!r}: {exc}. {_HINT}") from exc
    except subprocess.TimeoutExpired as exc:
        raise SlurmJobError(f"{' '.join(command)} did not answer within 60 s") from exc


def _parse_states(output: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for line in output.splitlines():
        jid, _, state = line.strip().partition("|")
        if jid and state:
            found[jid] = state
    return found


def _controller_states(job_id: str) -> dict[str, str]:
    """JobID -> state from slurmctld; empty when it no longer (or never) held the job."""
    done = _run(["squeue", "-h", "-t", "all", "-j", job_id, "-o", "%i|%T"])
    if done.returncode != 0:  # "Invalid job id specified": purged after MinJobAge
        return {}
    return _parse_states(done.stdout)
