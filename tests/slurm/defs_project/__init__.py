"""A code location as the README lays one out: this module calls `build_definitions`."""

from further_dagster import build_definitions
from tests.slurm.defs_project.cells import slurm_chain

defs = build_definitions(slurm_chain, mode="SLURM")
