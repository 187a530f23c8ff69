"""`python -m further_dagster.dagster.worker api execute_run|execute_step ...`: Dagster's run
and step workers as they run inside Slurm jobs.

The same as `dagster api ...`, except that SIGTERM does not interrupt the worker:

- a step: on a preemption Slurm sends SIGTERM and requeues the job. An interrupted step would
  record a STEP_FAILURE and fail the run, while the requeued job is about to run it again; so
  the worker lets SIGTERM pass and dies by the SIGKILL that follows (KillWait later).
- a run worker: a job cancelled outside Dagster (scancel, an administrator, a node failure)
  then ends without Dagster marking the run "interrupted"; run monitoring sees the job's Slurm
  state through `SlurmRunLauncher.check_run_worker_health` and fails the run with it.

Cancelling from Dagster goes through `SlurmRunLauncher.terminate` (the run is marked CANCELING,
which the worker watches) and the step handler's `terminate_step`, both of which scancel the
jobs named in the run's tags.
"""

from __future__ import annotations

import sys

from further_dagster.dagster import _compat

MODULE = "further_dagster.dagster.worker"


def main(argv: list[str] | None = None) -> None:
    _compat.dagster_cli(sys.argv[1:] if argv is None else argv, sigterm_interrupts=False)


if __name__ == "__main__":
    main()
