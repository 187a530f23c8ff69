"""The pure core: cells, projects, parameters, the definition graph, instances and logic keys.

Imports only the standard library and pydantic: no dagster, no submitit, no file writes.
`names` is the identifier rule the store shares, `keys` the logic and structural keys.
"""

from further_dagster.core.cell import Cell, Contributions, Req
from further_dagster.core.freshness import (
    Freshness,
    FreshnessOverrides,
    current,
    date_range,
    latest,
    normalize_freshness,
    parse_freshness,
    present,
    release,
)
from further_dagster.core.graph import DefinitionGraph
from further_dagster.core.hashing import digest, encode
from further_dagster.core.instances import CallContext, Instance, Resolver, walk
from further_dagster.core.iterative import IncrementingCell, Increments, Transformer
from further_dagster.core.keys import logic_key, structural_key
from further_dagster.core.params import (
    CONST,
    DYN,
    ITER,
    RAND,
    STUB,
    VAR,
    Opts,
    ProjectParams,
    Specs,
)
from further_dagster.core.project import REGISTRY, Project, get_project, resolve_cell
from further_dagster.core.query import QUERY
from further_dagster.core.resource import ResourceCell, file_release
from further_dagster.core.units import RecursiveUnit

__all__ = [
    "CONST",
    "QUERY",
    "DYN",
    "ITER",
    "RAND",
    "REGISTRY",
    "STUB",
    "VAR",
    "CallContext",
    "Cell",
    "Contributions",
    "DefinitionGraph",
    "Freshness",
    "FreshnessOverrides",
    "IncrementingCell",
    "Increments",
    "Instance",
    "Opts",
    "Project",
    "ProjectParams",
    "RecursiveUnit",
    "Req",
    "Resolver",
    "ResourceCell",
    "Specs",
    "Transformer",
    "current",
    "date_range",
    "digest",
    "encode",
    "file_release",
    "get_project",
    "latest",
    "logic_key",
    "normalize_freshness",
    "parse_freshness",
    "present",
    "release",
    "resolve_cell",
    "structural_key",
    "walk",
]
