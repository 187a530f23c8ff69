"""Slurm execution through submitit: specs, rendering and submission (no Dagster here).

- `SlurmSpec` / `merge`: what a job asks for, layered launcher < executor config < cell.
- `submitit_parameters` / `sbatch_text`: the pure translation to submitit and the sbatch text.
- `make_executor`, `submit_with_fallbacks`, `submit_batch`, `slurm_state`, `task_states`,
  `cancel`: the cluster.
"""

from further_dagster.slurm.render import sbatch_text, slurm_parameters, submitit_parameters
from further_dagster.slurm.spec import SlurmSpec, merge
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
