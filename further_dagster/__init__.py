"""further_dagster: Further-style cells as memoized Dagster assets over furu-style artifact
directories, with Slurm execution through submitit.

`import further_dagster` and a `Session` never import dagster; `build_definitions` (and the
rest of `further_dagster.dagster`) load it on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from further_dagster import errors
from further_dagster.core import (
    CONST,
    DYN,
    ITER,
    RAND,
    STUB,
    VAR,
    Cell,
    Contributions,
    IncrementingCell,
    Increments,
    Instance,
    Opts,
    Project,
    ProjectParams,
    RecursiveUnit,
    Req,
    ResourceCell,
    Specs,
    Transformer,
    current,
    date_range,
    file_release,
    latest,
    present,
    release,
)
from further_dagster.core.query import QUERY
from further_dagster.engine import Mode, Plan, RunReport, Session
from further_dagster.slurm.spec import SlurmSpec
from further_dagster.store import ArtifactStore

if TYPE_CHECKING:
    from further_dagster.dagster import build_definitions

__version__ = "0.1.0"

__all__ = [
    "CONST",
    "QUERY",
    "DYN",
    "ITER",
    "RAND",
    "STUB",
    "VAR",
    "ArtifactStore",
    "Cell",
    "Contributions",
    "IncrementingCell",
    "Increments",
    "Instance",
    "Mode",
    "Opts",
    "Plan",
    "Project",
    "ProjectParams",
    "RecursiveUnit",
    "Req",
    "ResourceCell",
    "RunReport",
    "Session",
    "SlurmSpec",
    "Specs",
    "Transformer",
    "__version__",
    "build_definitions",
    "current",
    "date_range",
    "errors",
    "file_release",
    "latest",
    "present",
    "release",
]


def __getattr__(name: str) -> Any:
    if name == "build_definitions":
        from further_dagster.dagster import build_definitions

        return build_definitions
    raise AttributeError(f"module 'further_dagster' has no attribute {name!r}")
