"""The Dagster projection: assets, partitions, IO manager, executors, sensors, launchers.

The only layer that imports dagster.
"""

from typing import Any

from further_dagster.dagster.definitions import build_definitions
from further_dagster.dagster.executor import (
    ModeExecutor,
    dask_executor,
    further_executor_def,
    mode_executor_def,
    slurm_executor,
)
from further_dagster.dagster.location import Location, location_of
from further_dagster.dagster.resources import FurtherIOManager, FurtherResource
from further_dagster.dagster.sensor import evaluate_releases, release_sensor
from further_dagster.dagster.skip_cached import SkipCachedExecutor

__all__ = [
    "FurtherIOManager",
    "FurtherResource",
    "Location",
    "ModeExecutor",
    "SkipCachedExecutor",
    "SlurmRunLauncher",
    "SlurmStepHandler",
    "build_definitions",
    "dask_executor",
    "evaluate_releases",
    "further_executor_def",
    "location_of",
    "mode_executor_def",
    "release_sensor",
    "slurm_executor",
]


def __getattr__(name: str) -> Any:
    # Loaded on first use, not by every code location (they import submitit, ~20 ms); Dagster
    # loads the launcher from dagster.yaml's `module: further_dagster.dagster.slurm_launcher`.
    if name == "SlurmRunLauncher":
        from further_dagster.dagster.slurm_launcher import SlurmRunLauncher

        return SlurmRunLauncher
    if name == "SlurmStepHandler":
        from further_dagster.dagster.slurm_step_handler import SlurmStepHandler

        return SlurmStepHandler
    raise AttributeError(f"module 'further_dagster.dagster' has no attribute {name!r}")
