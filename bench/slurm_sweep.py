"""Definitions of the 100-point sweep (bench/slurm_sweep_cells.py), Slurm mode by default."""

from bench.slurm_sweep_cells import bench_sweep
from further_dagster import build_definitions

defs = build_definitions(bench_sweep, mode="SLURM")
