"""Glue between a `SlurmSpec` and a real Slurm: submit (with fallbacks), batch, state, cancel.

Every function talks to the cluster named by the environment (`SLURM_CONF`, Slurm's commands
on PATH); for the project's test cluster: `eval "$(scripts/slurm-cluster env)"`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import submitit
from submitit.core.utils import FailedJobError, FailedSubmissionError

from further_dagster.errors import SlurmJobError, SlurmSubmissionError
from further_dagster.slurm.render import submitit_parameters
from further_dagster.slurm.spec import SlurmSpec

__all__ = [
    "cancel",
    "make_executor",
    "slurm_state",
    "slurm_states",
    "submit_batch",
    "submit_with_fallbacks",
    "task_states",
]

R = TypeVar("R")
_log = logging.getLogger(__name__)
_HINT = 'Is Slurm installed and SLURM_CONF set? (test cluster: eval "$(scripts/slurm-cluster env)")'

# For an array parent id: the state that says most about the array, first match wins.
_STATE_PRIORITY = (
    "RUNNING",
    "COMPLETING",
    "CONFIGURING",
    "REQUEUED",
    "RESIZING",
    "PENDING",
    "SUSPENDED",
    "NODE_FAIL",
    "BOOT_FAIL",
    "OUT_OF_MEMORY",
    "FAILED",
    "TIMEOUT",
    "DEADLINE",
    "PREEMPTED",
    "CANCELLED",
    "REVOKED",
    "COMPLETED",
)


def make_executor(
    folder: str | Path,
    spec: SlurmSpec,
    *,
    job_name: str = "submitit",
    python: str | None = None,
) -> submitit.AutoExecutor:
    """A submitit `AutoExecutor` on Slurm, configured from `spec` (its fallbacks are ignored).

    Args:
        folder: submitit's folder for pickles, sbatch files and logs; every node must see it.
            Use a fresh folder per cluster lifetime: a restarted test cluster reuses job ids.
        spec: the resources.
        job_name: `--job-name`.
        python: interpreter command for the job; None means this process's `sys.executable`.

    Raises:
        SlurmSubmissionError: Slurm's commands are not available here.
    """
    kwargs: dict[str, Any] = {} if python is None else {"slurm_python": python}
    try:
        executor = submitit.AutoExecutor(folder, cluster="slurm", **kwargs)
    except RuntimeError as exc:  # 'Could not detect "srun", are you indeed on a slurm cluster?'
        raise SlurmSubmissionError(f"cannot submit to Slurm: {exc}. {_HINT}") from exc
    executor.update_parameters(name=job_name, **submitit_parameters(spec))
    return executor


def submit_with_fallbacks(
    folder: str | Path,
    spec: SlurmSpec,
    fn: Callable[..., R],
    *args: Any,
    job_name: str = "submitit",
    python: str | None = None,
    **kwargs: Any,
) -> submitit.Job[R]:
    """Submit `fn(*args, **kwargs)` as one job: `spec` first, then each of its fallbacks.

    Returns:
        The job of the first attempt sbatch accepted (see `spec.attempts()`).

    Raises:
        SlurmSubmissionError: sbatch refused every attempt; the message lists each attempt
            with sbatch's own error.
    """
    jobs = _submit_attempts(
        folder,
        spec,
        job_name,
        python,
        lambda executor: [executor.submit(fn, *args, **kwargs)],
    )
    return jobs[0]


def submit_batch(
    folder: str | Path,
    spec: SlurmSpec,
    calls: Sequence[tuple[Any, ...]],
    *,
    job_name: str = "submitit",
    python: str | None = None,
) -> list[submitit.Job[Any]]:
    """Submit several calls as ONE Slurm job array (`executor.batch()`), with fallbacks.

    Args:
        calls: one `(fn, *args)` tuple per call (bind keyword arguments with functools.partial).
            A single call is submitted as a plain job, as submitit does; none submits nothing.

    Returns:
        One job per call, in order; their ids are `<array id>_<index>`.

    Raises:
        SlurmSubmissionError: sbatch refused every attempt.
    """
    if not calls:
        return []
    for call in calls:
        if not call or not callable(call[0]):
            raise TypeError(f"each call must be a (fn, *args) tuple, got {call!r}")

    def submit_all(executor: submitit.AutoExecutor) -> list[submitit.Job[Any]]:
        with executor.batch():
            return [executor.submit(call[0], *call[1:]) for call in calls]

    return _submit_attempts(folder, spec, job_name, python, submit_all)


def _submit_attempts(
    folder: str | Path,
    spec: SlurmSpec,
    job_name: str,
    python: str | None,
    submit: Callable[[submitit.AutoExecutor], list[submitit.Job[Any]]],
) -> list[submitit.Job[Any]]:
    refusals: list[tuple[SlurmSpec, str]] = []
    for attempt in spec.attempts():
        executor = make_executor(folder, attempt, job_name=job_name, python=python)
        try:
            with _outside_job_env():
                jobs = submit(executor)
        except FailedJobError as exc:  # sbatch exited non-zero; the message is its stderr
            refusals.append((attempt, str(exc).strip() or repr(exc.__cause__)))
        except FailedSubmissionError as exc:  # sbatch's output named no job id
            refusals.append((attempt, str(exc).strip()))
        else:
            if refusals:
                _log.warning(
                    "sbatch accepted fallback %s for %r after %d refusal(s)",
                    _describe(attempt),
                    job_name,
                    len(refusals),
                )
            return jobs
        _log.info("sbatch refused %s for %r: %s", _describe(attempt), job_name, refusals[-1][1])
    lines = [f"sbatch refused every attempt to submit {job_name!r} ({len(refusals)}):"]
    for number, (attempt, message) in enumerate(refusals, start=1):
        lines.append(f"  {number}. {_describe(attempt)}")
        lines.extend(f"       {line}" for line in message.splitlines())
    lines.append(
        "Ask for less (cpus, mem_gb, gpus, time_min), another partition, or add a fitting spec "
        "to `fallbacks`; `sinfo -o '%P %c %m %G %l'` shows what each partition offers."
    )
    raise SlurmSubmissionError("\n".join(lines))


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


def _describe(spec: SlurmSpec) -> str:
    fields = spec.model_dump(exclude={"fallbacks"})
    if not fields["extra"]:
        del fields["extra"]
    return " ".join(f"{name}={value!r}" for name, value in fields.items())


def _run(command: list[str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    except FileNotFoundError as exc:
        raise SlurmJobError(f"cannot run {command[0]!r}: {exc}. {_HINT}") from exc
    except subprocess.TimeoutExpired as exc:
        raise SlurmJobError(f"{' '.join(command)} did not answer within 60 s") from exc


def slurm_states(job_id: str | int) -> dict[str, str]:
    """Slurm's accounting state of a job, or of every task of an array, via `sacct`.

    Returns:
        JobID -> state (first word: "CANCELLED by 0" -> "CANCELLED"), one entry per job
        allocation (`sacct -X`); empty when accounting has no record of it yet.

    Raises:
        SlurmJobError: sacct failed (e.g. slurmdbd unreachable).
    """
    done = _run(["sacct", "-j", str(job_id), "-X", "-n", "-P", "-o", "JobID,State"])
    if done.returncode != 0:
        raise SlurmJobError(f"sacct -j {job_id} failed: {done.stderr.strip()}. {_HINT}")
    states: dict[str, str] = {}
    for line in done.stdout.splitlines():
        jid, _, state = line.partition("|")
        if jid and state:
            states[jid] = state.split()[0]
    return states


def slurm_state(job_id: str | int) -> str:
    """The state of one job, e.g. "PENDING", "RUNNING", "COMPLETED", "CANCELLED", "TIMEOUT".

    Asked first of slurmctld (`squeue -t all`), which holds a job until MinJobAge after it
    ends and is ahead of accounting (sacct showed a started job as PENDING for up to ~4.5 s
    here), then of accounting (`sacct`, see `slurm_states`). A job neither knows is "UNKNOWN".
    For an array's parent id: the most telling task state (running before pending before
    failures before COMPLETED).

    Raises:
        SlurmJobError: sacct failed.
    """
    job_id = str(job_id)
    states = _controller_states(job_id) or slurm_states(job_id)
    if job_id in states:
        return states[job_id]
    if not states:
        return "UNKNOWN"
    found = set(states.values())
    for state in _STATE_PRIORITY:
        if state in found:
            return state
    return sorted(found)[0]


def _controller_states(job_id: str) -> dict[str, str]:
    """JobID -> state from slurmctld; empty when it no longer (or never) held the job."""
    done = _run(["squeue", "-h", "-t", "all", "-j", job_id, "-o", "%i|%T"])
    if done.returncode != 0:  # "Invalid job id specified": purged after MinJobAge
        return {}
    states: dict[str, str] = {}
    for line in done.stdout.splitlines():
        jid, _, state = line.strip().partition("|")
        if jid and state:
            states[jid] = state
    return states


def task_states(job_ids: Iterable[str | int]) -> dict[str, str]:
    """The state of many jobs and array tasks in one or two calls: JobID -> state.

    Array tasks are listed one by one (`123_4`), pending ones included (`squeue -r`), from
    slurmctld; ids it no longer holds (purged after MinJobAge) are asked of accounting. An id
    neither knows is absent from the result.

    Raises:
        SlurmJobError: sacct failed.
    """
    ids = sorted({str(j) for j in job_ids})
    if not ids:
        return {}
    done = _run(["squeue", "-h", "-r", "-t", "all", "-j", ",".join(ids), "-o", "%i|%T"])
    states: dict[str, str] = {}
    if done.returncode == 0:
        for line in done.stdout.splitlines():
            jid, _, state = line.strip().partition("|")
            if jid and state:
                states[jid] = state
    parents = {jid.split("_")[0] for jid in states}
    missing = [j for j in ids if j.split("_")[0] not in parents]
    if missing or done.returncode != 0:
        for job_id in missing if done.returncode == 0 else ids:
            for jid, state in slurm_states(job_id).items():
                states.setdefault(jid, state)
    return states


def cancel(job_id: str | int) -> None:
    """Cancel a job (or a whole array by its parent id) with `scancel`.

    A job that already ended, or that Slurm no longer knows, is not an error.

    Raises:
        SlurmJobError: scancel failed for another reason.
    """
    done = _run(["scancel", str(job_id)])
    message = (done.stderr + done.stdout).strip()
    if done.returncode == 0 and "error" not in message.lower():
        return
    harmless = ("already completing or completed", "invalid job id")
    if any(text in message.lower() for text in harmless):
        return
    raise SlurmJobError(f"scancel {job_id} failed (exit {done.returncode}): {message}. {_HINT}")
