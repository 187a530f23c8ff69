"""Slurm execution through submitit: specs, rendering, states and the client (no Dagster here).

- `SlurmSpec` / `merge`: what a job asks for, layered launcher < executor config < cell.
- `Dependency`: what a submission waits for (`--dependency=afterok:...,aftercorr:...`).
- `submitit_parameters` / `slurm_parameters` / `sbatch_text`: the pure translation to submitit
  and the sbatch text (golden files pin it).
- `states`: Slurm job states, once (live, ended, array summary, explanations).
- `SlurmClient` (the protocol), `SubmititClient` (the real one), `SubmittedJob`, `JobResult`,
  `describe_job_end`: the cluster. `further_dagster.testing.slurm.FakeSlurmClient` is the
  stand-in for unit tests.

`SlurmSpec`, `merge` and `states` need only pydantic and the standard library; the other
names import submitit on first use, so a cell module that declares `slurm = SlurmSpec(...)`
stays cheap to import. Only `_submitit.py` imports submitit.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from further_dagster.slurm import states
from further_dagster.slurm.dependency import Dependency
from further_dagster.slurm.spec import SlurmSpec, merge

if TYPE_CHECKING:
    from further_dagster.slurm.client import (
        JobResult,
        SlurmClient,
        SubmititClient,
        SubmittedJob,
        describe_job_end,
    )
    from further_dagster.slurm.render import sbatch_text, slurm_parameters, submitit_parameters

__all__ = [
    "Dependency",
    "JobResult",
    "SlurmClient",
    "SlurmSpec",
    "SubmititClient",
    "SubmittedJob",
    "describe_job_end",
    "merge",
    "sbatch_text",
    "slurm_parameters",
    "states",
    "submitit_parameters",
]

_LAZY = {
    "sbatch_text": "render",
    "slurm_parameters": "render",
    "submitit_parameters": "render",
    "JobResult": "client",
    "SlurmClient": "client",
    "SubmititClient": "client",
    "SubmittedJob": "client",
    "describe_job_end": "client",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'further_dagster.slurm' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"further_dagster.slurm.{module}"), name)
    globals()[name] = value
    return value
