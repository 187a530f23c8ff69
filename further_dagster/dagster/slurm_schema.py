"""The config schema the Slurm run launcher and the Slurm step executor share.

A `SlurmSpec` in Dagster config: every field optional, so that only the fields a layer sets
override the layers below it (see `further_dagster.slurm.merge`):

    launcher defaults (dagster.yaml)  <  executor run config  <  the cell's own `slurm`

The run tags the launcher and the step handler write are in `tags.py`; `job_ids_in_tags`
reads every job id back from them (so that a restarted daemon, the UI or a person can find
every job of a run). Slurm job states are in `further_dagster.slurm.states`, and
`describe_job_end` in `further_dagster.slurm.client`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dagster as dg

from further_dagster.dagster.tags import ARRAY_TAG_PREFIX, JOB_ID_TAG, LOCAL_PREFIX, STEP_TAG_PREFIX
from further_dagster.slurm import SlurmSpec

__all__ = [
    "default_folder",
    "job_ids_in_tags",
    "spec_config_schema",
    "spec_from_config",
]

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
