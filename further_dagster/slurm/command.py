"""Run a command inside a Slurm job: what the run launcher and the step handler submit.

`run_command` is pickled by submitit and called in the job. The child inherits the job's stdout
and stderr (submitit's log files), so its output streams live into them.

`block_sigterm=True` starts the child with SIGTERM blocked. A Dagster step worker turns SIGTERM
into a STEP_FAILURE event ("interrupted"); but on a preemption Slurm sends SIGTERM and then
requeues the job, so the step must die silently (SIGKILL follows after KillWait) and run again
from the requeued job. A real cancellation is seen by the executor's health check instead.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Mapping, Sequence

__all__ = ["CommandFailed", "run_command"]


class CommandFailed(RuntimeError):
    """The command exited non-zero (the job then ends FAILED; submitit keeps this message)."""


def _block_sigterm() -> None:
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})


def run_command(
    argv: Sequence[str],
    env: Mapping[str, str] | None = None,
    *,
    block_sigterm: bool = False,
    cwd: str | None = None,
) -> int:
    """Run `argv` with `env` added to the environment; return 0 or raise `CommandFailed`."""
    full_env = {**os.environ, **(env or {})}
    done = subprocess.run(
        list(argv),
        env=full_env,
        cwd=cwd,
        check=False,
        preexec_fn=_block_sigterm if block_sigterm else None,  # noqa: PLW1509 - single-threaded job
    )
    if done.returncode != 0:
        raise CommandFailed(
            f"{' '.join(argv[:4])} ... exited with code {done.returncode} in Slurm job "
            f"{os.environ.get('SLURM_JOB_ID', '?')}; its output is in this job's log files"
        )
    return 0
