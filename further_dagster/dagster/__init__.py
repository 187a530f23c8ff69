"""The Dagster projection: assets, partitions, IO manager, executors, sensors, launchers.

The only layer that imports dagster.
"""

from further_dagster.dagster.definitions import build_definitions
from further_dagster.dagster.executor import SkipCachedExecutor, further_executor_def
from further_dagster.dagster.resources import FurtherIOManager, FurtherStore
from further_dagster.dagster.sensor import evaluate_releases, release_sensor

__all__ = [
    "FurtherIOManager",
    "FurtherStore",
    "SkipCachedExecutor",
    "build_definitions",
    "evaluate_releases",
    "further_executor_def",
    "release_sensor",
]
