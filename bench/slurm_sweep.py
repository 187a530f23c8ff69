"""Definitions of the 100-point sweep (bench/slurm_sweep_cells.py), Slurm mode by default."""

from bench.slurm_sweep_cells import bench_many, bench_sweep
from further_dagster import build_definitions

defs = build_definitions(bench_sweep, mode="SLURM")

many_defs = build_definitions(bench_many, mode="SLURM")
"""Six independent cells and a join (`bench_slurm.py --steps`)."""
