"""Scopes: what the cells of one project see of a call (core/instances.py resolves with them).

A call's project params and label values are set per project; when a cell requires a cell of
another project, the called project's scope is derived from the caller's: the label a called
assignment routes to it, and the caller's params it translates (core/project.py `calls=`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from further_dagster.core.params import ProjectParams


class Scope:
    """What the cells of one project see of a call: the project params set for it, and the
    cell specs / opts / called assignments of a label routed to the project.

    The default scope of a project (nothing routed, nothing translated) has an empty `token`;
    any other scope's token encodes what it sets and joins the resolver's cache keys.
    """

    __slots__ = ("project", "params", "cell_specs", "opts", "assignments", "token", "_set", "_all")

    def __init__(
        self,
        project: str,
        params: Mapping[str, Any],
        cell_specs: Mapping[str, Mapping[str, Any]],
        opts: Mapping[str, Mapping[str, Any]],
        assignments: Mapping[str, Mapping[str, str]],
        token: bytes,
    ) -> None:
        self.project = project
        self.params = params
        self.cell_specs = cell_specs
        self.opts = opts
        self.assignments = assignments
        self.token = token
        self._set: dict[str, Any] | None = None
        self._all: ProjectParams | None = None
