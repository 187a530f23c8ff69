"""Slurm execution through submitit: specs, rendering and submission (no Dagster here).

- `SlurmSpec` / `merge`: what a job asks for, layered launcher < executor config < cell.
- `submitit_parameters` / `sbatch_text`: the pure translation to submitit and the sbatch text.
- `make_executor`, `submit_with_fallbacks`, `submit_batch`, `slurm_state`, `task_states`,
  `cancel`: the cluster.

`SlurmSpec` and `merge` need only pydantic; the other names import submitit on first use, so a
cell module that declares `slurm = SlurmSpec(...)` stays cheap to import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from further_dagster.slurm.spec import SlurmSpec, merge

if TYPE_CHECKING:
    from further_dagster.slurm.render import sbatch_text, slurm_parameters, submitit_parameters
    from further_dagster.slurm.submit import (
        cancel,
        make_executor,
        slurm_state,
        slurm_states,
        submit_batch,
        submit_with_fallbacks,
        task_states,
    )

__all__ = [
    "SlurmSpec",
    "cancel",
    "make_executor",
    "merge",
    "sbatch_text",
    "slurm_parameters",
    "slurm_state",
    "slurm_states",
    "submit_batch",
    "submit_with_fallbacks",
    "submitit_parameters",
    "task_states",
]

_LAZY = {
    "sbatch_text": "render",
    "slurm_parameters": "render",
    "submitit_parameters": "render",
    "cancel": "submit",
    "make_executor": "submit",
    "slurm_state": "submit",
    "slurm_states": "submit",
    "submit_batch": "submit",
    "submit_with_fallbacks": "submit",
    "task_states": "submit",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'further_dagster.slurm' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"further_dagster.slurm.{module}"), name)
    globals()[name] = value
    return value
