"""The only module that imports submitit, public or internal.

submitit's sbatch rendering, its file layout and its result pickles are not all public API;
keeping every such import here means a submitit upgrade breaks one file, and the pin in
pyproject.toml says which version it was written against (submitit 1.5.4). Nothing here
leaves the slurm layer: `client.py` turns jobs into `SubmittedJob`s.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

from submitit.auto.auto import AutoExecutor
from submitit.core.utils import FailedJobError, FailedSubmissionError, JobPaths, pickle_load
from submitit.slurm.slurm import SlurmExecutor, _convert_mem, _make_sbatch_string

__all__ = [
    "SUBMIT_MODULE",
    "AutoExecutor",
    "JobPaths",
    "SlurmExecutor",
    "auto_executor",
    "convert_mem",
    "is_timeout",
    "make_sbatch_string",
    "read_result",
    "refusal_message",
]

# What the sbatch script runs: `python -u -m submitit.core._submit <folder>`.
SUBMIT_MODULE = "submitit.core._submit"
# submitit raises these in the job when its USR2 arrives near the time limit (not preemption).
_TIMEOUT_REASONS = ("timed-out and not checkpointable", "timed-out too many times")


def auto_executor(folder: str | Path, *, python: str | None) -> AutoExecutor:
    """A Slurm `AutoExecutor` (RuntimeError when `srun` is not on PATH)."""
    kwargs: dict[str, Any] = {} if python is None else {"slurm_python": python}
    return AutoExecutor(folder, cluster="slurm", **kwargs)


def convert_mem(mem_gb: float) -> str:
    """`--mem` as submitit writes it ("2GB", "2560MB")."""
    return _convert_mem(mem_gb)


def make_sbatch_string(command: str, folder: Path, **parameters: Any) -> str:
    """submitit's own sbatch text for `SlurmExecutor.parameters`."""
    return _make_sbatch_string(command=command, folder=folder, **parameters)


def refusal_message(exc: BaseException) -> str | None:
    """sbatch's error when `exc` says it refused a submission; None for any other error."""
    if isinstance(exc, FailedJobError):  # sbatch exited non-zero; the message is its stderr
        return str(exc).strip() or repr(exc.__cause__)
    if isinstance(exc, FailedSubmissionError):  # sbatch's output named no job id
        return str(exc).strip()
    return None


def read_result(path: Path) -> tuple[bool, Any] | None:
    """A result pickle as (succeeded, value or remote traceback text); None while it is absent
    or still being written."""
    try:
        outcome, value = pickle_load(path)
    except (EOFError, OSError, pickle.UnpicklingError):
        return None
    return (True, value) if outcome == "success" else (False, str(value))


def is_timeout(traceback_text: str) -> bool:
    """The remote error is submitit giving up on a job that reached its time limit."""
    return any(reason in traceback_text for reason in _TIMEOUT_REASONS)
