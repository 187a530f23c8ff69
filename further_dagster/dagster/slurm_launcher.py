"""`SlurmRunLauncher`: every run worker (`dagster api execute_run`) as a Slurm job.

Set it in dagster.yaml; its SlurmSpec fields are the lowest layer of every Slurm job of the
instance (the Slurm step executor merges its run config and each cell's spec on top):

    run_launcher:
      module: further_dagster.dagster.slurm_launcher
      class: SlurmRunLauncher
      config:
        partition: debug        # any SlurmSpec field: cpus, gpus, mem_gb, time_min, extra,
        time_min: 120           # fallbacks
        folder: /shared/dagster/slurm   # default: <DAGSTER_HOME>/slurm

A run's tag `further/slurm` (a SlurmSpec as JSON) overrides the defaults for its run worker.
The job id and log paths go into the run's tags (`further/slurm_job_id`, `further/slurm_stdout`,
`further/slurm_stderr`). Run monitoring (`run_monitoring: enabled: true` in dagster.yaml, with
`dagster-daemon` running) asks `check_run_worker_health`, which maps the job's Slurm state:
a job that ended FAILED, CANCELLED, TIMEOUT, NODE_FAIL, OUT_OF_MEMORY, PREEMPTED, ... while
its run was still going fails the run, with the state, job id and log files in the message.
`terminate` (the UI's "Terminate") scancels the run worker, whose executor then cancels its
steps; after `terminate_wait_s` every job named in the run's tags is cancelled and the run is
marked canceled if the worker could not do it.

Every job must reach the instance's storage (PostgreSQL, or SQLite on a filesystem all nodes
share), the code location and the artifact store. A preempted run worker is not resumed: put
run workers on a partition that does not preempt (steps requeue fine).

The launcher talks to Slurm through a `SlurmClient` given at its constructor (default
`SubmititClient()`); unit tests pass `further_dagster.testing.slurm.FakeSlurmClient`.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dagster as dg

from further_dagster.dagster import _compat
from further_dagster.dagster.slurm_schema import (
    default_folder,
    job_ids_in_tags,
    spec_config_schema,
    spec_from_config,
)
from further_dagster.dagster.tags import FOLDER_TAG, JOB_ID_TAG, SLURM_TAG, STDERR_TAG, STDOUT_TAG
from further_dagster.dagster.worker import MODULE as WORKER_MODULE
from further_dagster.engine.backends.slurm import spec_json
from further_dagster.errors import FurtherError
from further_dagster.slurm import SlurmSpec, merge, states
from further_dagster.slurm.client import SlurmClient, SubmititClient, describe_job_end
from further_dagster.slurm.command import run_command

__all__ = ["SlurmRunLauncher"]


class SlurmRunLauncher(_compat.RunLauncher, _compat.ConfigurableClass):
    """Launches each run worker as a Slurm job through submitit (see the module docstring).

    Args:
        inst_data: set by Dagster when the launcher comes from dagster.yaml.
        folder: submitit folder on a filesystem every node shares; runs get `<folder>/<run id>`.
        python: interpreter command for the jobs (default: the code location's).
        terminate_wait_s: how long `terminate` waits for the run worker to cancel itself.
        client: who talks to Slurm (default `SubmititClient()`; never from dagster.yaml).
        **spec: SlurmSpec fields, the defaults of every job (run workers and steps).
    """

    def __init__(
        self,
        inst_data: Any = None,
        folder: str | None = None,
        python: str | None = None,
        terminate_wait_s: float = 10.0,
        client: SlurmClient | None = None,
        **spec: Any,
    ) -> None:
        self._inst_data = inst_data
        self.folder = folder
        self.python = python
        self.terminate_wait_s = float(terminate_wait_s)
        self.client: SlurmClient = client or SubmititClient()
        self.defaults: SlurmSpec = spec_from_config(spec)
        super().__init__()  # type: ignore[no-untyped-call]

    # --- ConfigurableClass --------------------------------------------------------------

    @property
    def inst_data(self) -> Any:
        return self._inst_data

    @classmethod
    def config_type(cls) -> dict[str, Any]:
        return {
            **spec_config_schema(),
            "folder": dg.Field(
                dg.Noneable(str),
                default_value=None,
                description="submitit folder shared by every node (default <DAGSTER_HOME>/slurm)",
            ),
            "python": dg.Field(
                dg.Noneable(str), default_value=None, description="interpreter for the jobs"
            ),
            "terminate_wait_s": dg.Field(
                float,
                default_value=10.0,
                description="seconds terminate() waits for the run worker to cancel itself",
            ),
        }

    @classmethod
    def from_config_value(cls, inst_data: Any, config_value: Mapping[str, Any]) -> SlurmRunLauncher:
        return cls(inst_data=inst_data, **dict(config_value))

    # --- RunLauncher ----------------------------------------------------------------------

    def _run_folder(self, run_id: str) -> Path:
        root = Path(self.folder) if self.folder else default_folder(self._instance)
        return root / run_id / "run"

    def spec_for(self, run: Any) -> SlurmSpec:
        """launcher defaults < the run's `further/slurm` tag."""
        raw = run.tags.get(SLURM_TAG)
        return merge(self.defaults, json.loads(raw) if raw else None)

    def launch_run(self, context: Any) -> None:
        """Submit the run worker as a Slurm job; record its id and log files in run tags."""
        run = context.dagster_run
        instance = self._instance
        if run.job_code_origin is None:
            raise dg.DagsterInvariantViolationError(
                f"run {run.run_id} has no code origin; the Slurm launcher runs only runs "
                "launched from a code location"
            )
        folder = self._run_folder(run.run_id)
        spec = self.spec_for(run)
        argv = _compat.run_worker_command(run, instance, module=WORKER_MODULE)
        started = time.perf_counter()
        job = self.client.submit(
            folder,
            spec,
            run_command,
            argv,
            None,
            job_name=f"dagster-run-{run.run_id[:8]}",
            python=self.python,
        )
        tags = {
            JOB_ID_TAG: job.job_id,
            STDOUT_TAG: str(job.stdout),
            STDERR_TAG: str(job.stderr),
            FOLDER_TAG: str(folder.parent),
        }
        instance.add_run_tags(run.run_id, tags)
        instance.report_engine_event(
            f"Launched the run worker as Slurm job {job.job_id} in "
            f"{time.perf_counter() - started:.2f}s",
            run,
            _compat.EngineEventData(
                metadata={
                    "Slurm job id": job.job_id,
                    "spec": dg.MetadataValue.json(spec_json(spec)),
                    "stdout": dg.MetadataValue.path(tags[STDOUT_TAG]),
                    "stderr": dg.MetadataValue.path(tags[STDERR_TAG]),
                }
            ),
            cls=self.__class__,
        )

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: Any) -> Any:
        """The run worker's Slurm state as Dagster's worker status (see the module docstring)."""
        job_id = run.tags.get(JOB_ID_TAG)
        status = _compat.WorkerStatus
        if not job_id:
            return _compat.CheckRunHealthResult(status.UNKNOWN, f"run has no {JOB_ID_TAG} tag")
        try:
            state = self.client.state(job_id)
        except FurtherError as exc:
            return _compat.CheckRunHealthResult(status.UNKNOWN, str(exc), transient=True)
        if state == states.UNKNOWN:
            return _compat.CheckRunHealthResult(
                status.NOT_FOUND, f"Slurm knows no job {job_id}", run_worker_id=job_id
            )
        if states.is_live(state):
            return _compat.CheckRunHealthResult(status.RUNNING, state, run_worker_id=job_id)
        if state == "COMPLETED":
            return _compat.CheckRunHealthResult(status.SUCCESS, state, run_worker_id=job_id)
        message = describe_job_end(
            self.client,
            job_id,
            state,
            self._run_folder(run.run_id),
            what=f"the run worker of {run.run_id}",
        )
        return _compat.CheckRunHealthResult(status.FAILED, message, run_worker_id=job_id)

    def get_run_worker_debug_info(
        self, run: Any, include_container_logs: bool | None = True
    ) -> str | None:
        """The tail of the run worker's stderr log."""
        path = run.tags.get(STDERR_TAG)
        if not path or not include_container_logs or not os.path.exists(path):
            return None
        with open(path, errors="replace") as fh:
            tail = fh.read()[-4000:]
        return f"Last lines of {path}:\n{tail}"

    def terminate(self, run_id: str) -> bool:
        """Cancel every Slurm job the run's tags name; mark the run canceled."""
        instance = self._instance
        run = instance.get_run_by_id(run_id)
        if run is None or run.is_finished:
            return False
        job_id = run.tags.get(JOB_ID_TAG)
        if not job_id:
            return False
        instance.report_run_canceling(run, message=f"Cancelling Slurm job {job_id} (scancel)")
        # The worker ignores SIGTERM (see worker.py) and dies by SIGKILL KillWait later; it
        # stops launching steps when it sees the run CANCELING. Every job the run's tags name
        # is cancelled here, again until the worker is gone (it may submit one more meanwhile).
        self.client.cancel(job_id)
        deadline = time.monotonic() + self.terminate_wait_s
        while True:
            run = instance.get_run_by_id(run_id) or run
            jobs = job_ids_in_tags(run.tags)
            live = {j for j, s in self.client.states(jobs).items() if states.is_live(s)}
            for parent in sorted({j.split("_")[0] for j in live} - {job_id}):
                self.client.cancel(parent)
            if not live or time.monotonic() > deadline:
                break
            time.sleep(0.25)
        if not run.is_finished:
            instance.report_run_canceled(
                run, message=f"Run canceled: its Slurm job {job_id} was cancelled (scancel)"
            )
        return True
