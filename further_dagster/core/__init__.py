"""The pure core: cells, projects, parameters, the definition graph, instances and logic keys.

Imports only the standard library and pydantic: no dagster, no submitit, no file writes.
"""

from further_dagster.core.cell import Cell, Contributions, Req
from further_dagster.core.graph import DefinitionGraph
from further_dagster.core.hashing import digest, encode
from further_dagster.core.instances import CallContext, Instance, Resolver, logic_key, walk
from further_dagster.core.params import VAR, Opts, ProjectParams, Specs
from further_dagster.core.project import Project, get_project, resolve_cell

__all__ = [
    "VAR",
    "CallContext",
    "Cell",
    "Contributions",
    "DefinitionGraph",
    "Instance",
    "Opts",
    "Project",
    "ProjectParams",
    "Req",
    "Resolver",
    "Specs",
    "digest",
    "encode",
    "get_project",
    "logic_key",
    "resolve_cell",
    "walk",
]
