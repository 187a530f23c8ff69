"""The example code location (`dagster dev -w workspace.yaml`, `dagster ... -m example_project`).

Only the definitions live here; the cells live in `example_project.cells`, which imports no
Dagster. A Slurm task imports that module alone (this package is entered bare, never run:
engine/backends/slurm_task.py), so it starts in about a second instead of importing Dagster.
"""

from example_project.cells import example
from further_dagster import build_definitions

defs = build_definitions(example)

__all__ = ["defs", "example"]
