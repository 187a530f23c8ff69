"""Run a command inside a Slurm job: what the run launcher and the step handler submit.

`run_command` is pickled by submitit and called in the job. The child inherits the job's stdout
and stderr (submitit's log files), so its output streams live into them, and it gets Slurm's
signals itself (every process of the job does).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence

__all__ = ["CommandFailed", "run_command"]


class CommandFailed(RuntimeError):
    """The command exited non-zero (the job then ends FAILED; submitit keeps this message)."""


def run_command(
    argv: Sequence[str],
    env: Mapping[str, str] | None = None,
    *,
    cwd: str | None = None,
) -> int:
    """Run `argv` with `env` added to the environment; return 0 or raise `CommandFailed`."""
    full_env = {**os.environ, **(env or {})}
    done = subprocess.run(list(argv), env=full_env, cwd=cwd, check=False)
    if done.returncode != 0:
        raise CommandFailed(
            f"{' '.join(argv[:4])} ... exited with code {done.returncode} in Slurm job "
            f"{os.environ.get('SLURM_JOB_ID', '?')}; its output is in this job's log files"
        )
    return 0
