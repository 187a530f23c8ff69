"""The config schema the Slurm run launcher and the Slurm step executor share, and run tags.

A `SlurmSpec` in Dagster config: every field optional, so that only the fields a layer sets
override the layers below it (see `further_dagster.slurm.merge`):

    launcher defaults (dagster.yaml)  <  executor run config  <  the cell's own `slurm`

Run tags written by the launcher and the step handler (so that a restarted daemon, the UI or a
person can find every job of a run):

    further/slurm_job_id, further/slurm_stdout, further/slurm_stderr   the run worker's job
    further/slurm_step/<step key>     a step's Slurm job id, or `local:<pid>@<host>` for a step
                                      run next to the run worker (it submits job arrays)
    further/slurm_array/<step key>    the job arrays a step submitted (comma-separated ids)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dagster as dg

from further_dagster.slurm import SlurmSpec

__all__ = [
    "ARRAY_TAG_PREFIX",
    "LIVE_STATES",
    "describe_job_end",
    "JOB_ID_TAG",
    "LOCAL_PREFIX",
    "SLURM_TAG",
    "STDERR_TAG",
    "STDOUT_TAG",
    "STEP_TAG_PREFIX",
    "default_folder",
    "job_ids_in_tags",
    "spec_config_schema",
    "spec_from_config",
]

JOB_ID_TAG = "further/slurm_job_id"
STDOUT_TAG = "further/slurm_stdout"
STDERR_TAG = "further/slurm_stderr"
FOLDER_TAG = "further/slurm_folder"
STEP_TAG_PREFIX = "further/slurm_step/"
ARRAY_TAG_PREFIX = "further/slurm_array/"
LOCAL_PREFIX = "local:"
# A run tag (JSON SlurmSpec) for the run worker's job, above the launcher defaults.
SLURM_TAG = "further/slurm"

_SPEC_KEYS = ("partition", "cpus", "gpus", "mem_gb", "time_min", "extra", "fallbacks")


def spec_config_schema() -> dict[str, dg.Field]:
    """The SlurmSpec fields as optional Dagster config fields (no defaults: unset = inherit)."""
    return {
        "partition": dg.Field(str, is_required=False, description="Slurm partition"),
        "cpus": dg.Field(int, is_required=False, description="CPUs for the task"),
        "gpus": dg.Field(int, is_required=False, description="GPUs (--gres=gpu:N)"),
        "mem_gb": dg.Field(float, is_required=False, description="memory in GB (--mem)"),
        "time_min": dg.Field(int, is_required=False, description="time limit in minutes"),
        "extra": dg.Field(
            dg.Permissive(),
            is_required=False,
            description="raw sbatch options, e.g. {qos: low}; an empty value gives a bare flag",
        ),
        "fallbacks": dg.Field(
            [dg.Permissive()],
            is_required=False,
            description="specs tried in order when sbatch refuses this one",
        ),
    }


def spec_from_config(config: Mapping[str, Any] | None) -> SlurmSpec:
    """The SlurmSpec a config mapping sets (only the SlurmSpec keys present in it)."""
    fields = {k: v for k, v in (config or {}).items() if k in _SPEC_KEYS and v is not None}
    if "extra" in fields:
        fields["extra"] = {str(k): str(v) for k, v in dict(fields["extra"]).items()}
    if "fallbacks" in fields:
        fields["fallbacks"] = tuple(SlurmSpec(**dict(f)) for f in fields["fallbacks"])
    return SlurmSpec(**fields)


def default_folder(instance: Any) -> Path:
    """`<DAGSTER_HOME>/slurm`: next to the instance, which the jobs must reach anyway."""
    root = getattr(instance, "root_directory", None) or os.environ.get("DAGSTER_HOME")
    if not root:
        raise dg.DagsterInvariantViolationError(
            "the Slurm launcher and executor need a folder every node can read: set `folder` in "
            "their config, or use a persistent instance (DAGSTER_HOME)"
        )
    return Path(root) / "slurm"


def job_ids_in_tags(tags: Mapping[str, str]) -> list[str]:
    """Every Slurm job id a run's tags name (run worker, steps, arrays)."""
    ids: list[str] = []
    for key, value in tags.items():
        if key == JOB_ID_TAG or key.startswith((STEP_TAG_PREFIX, ARRAY_TAG_PREFIX)):
            ids.extend(
                v.strip()
                for v in value.split(",")
                if v.strip() and not v.strip().startswith(LOCAL_PREFIX)
            )
    return ids


# States in which a job may still run (or run again, after a requeue).
LIVE_STATES = frozenset(
    {
        "PENDING",
        "CONFIGURING",
        "RUNNING",
        "COMPLETING",
        "REQUEUED",
        "REQUEUE_FED",
        "REQUEUE_HOLD",
        "RESIZING",
        "SUSPENDED",
        "SIGNALING",
        "STAGE_OUT",
        "STOPPED",
        "UNKNOWN",
    }
)


def describe_job_end(job_id: str, state: str, folder: Path, *, what: str) -> str:
    """Why a job ended, naming its id, state and log files (and a timeout as such)."""
    from submitit.core.utils import JobPaths

    paths = JobPaths(folder, job_id=str(job_id), task_id=0)
    logs = f"logs: {paths.stdout} and {paths.stderr}"
    detail = ""
    if paths.result_pickle.exists():
        try:
            from submitit.core.utils import pickle_load

            outcome, value = pickle_load(paths.result_pickle)
            if outcome == "error":
                detail = str(value).strip().splitlines()[-1]
        except Exception:  # noqa: BLE001 - the message is best effort
            detail = ""
    if state == "TIMEOUT" or "timed-out" in detail:
        return f"Slurm job {job_id} for {what} timed out (state {state}; raise time_min); {logs}"
    if state == "CANCELLED":
        return (
            f"Slurm job {job_id} for {what} was CANCELLED outside Dagster (scancel or an "
            f"administrator); {logs}"
        )
    reason = f": {detail}" if detail else ""
    return f"Slurm job {job_id} for {what} ended {state}{reason}; {logs}"
