"""Projects: a namespace of cells with a version, a description and project-level parameters."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from further_dagster.core.params import ProjectParams
from further_dagster.errors import DuplicateNameError, InvalidNameError, UnknownCellError

if TYPE_CHECKING:
    from further_dagster.core.cell import Cell

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# Projects by name, so "project.cell" strings resolve without passing projects around.
_PROJECTS: dict[str, Project] = {}
# Bumped whenever a project or cell is (re)defined, so caches of resolved plans know to drop.
_GENERATION = [0]


def generation() -> int:
    """A counter that changes whenever any project or cell is defined or redefined."""
    return _GENERATION[0]


def check_identifier(kind: str, name: str, *, fix: str) -> str:
    """Names become directory names in the store: only plain identifiers are allowed."""
    if not isinstance(name, str) or not _IDENTIFIER.match(name):
        raise InvalidNameError(
            f"{kind} name {name!r} is not a plain identifier (letters, digits, underscores, not "
            f"starting with a digit); such names become store directories and must not escape "
            f"them. {fix}"
        )
    return name


class Project:
    """A namespace of cells.

    Args:
        name: identifier, the asset key prefix and Dagster group of its cells.
        version: the project's interface version (informational; keys come from cells).
        description: shown in Dagster.
        params: a `ProjectParams` subclass; cells subscribe to its fields with
            `project_params = ("field", ...)` and receive the session's value (or the default).
    """

    def __init__(
        self,
        name: str,
        *,
        version: str = "1",
        description: str = "",
        params: type[ProjectParams] | None = None,
    ) -> None:
        check_identifier("project", name, fix="Rename the project, e.g. 'my_analysis'.")
        if params is not None and not (
            isinstance(params, type) and issubclass(params, ProjectParams)
        ):
            raise InvalidNameError(f"project {name!r}: params must be a ProjectParams subclass")
        self.name = name
        self.version = version
        self.description = description
        self.params: type[ProjectParams] = params or ProjectParams
        self.cells: dict[str, type[Cell]] = {}
        self._origin: str = self._caller_module()
        previous = _PROJECTS.get(name)
        if previous is not None and previous._origin != self._origin:
            raise DuplicateNameError(
                f"two projects are named {name!r} (defined in {previous._origin} and "
                f"{self._origin}); project names must be unique, rename one of them."
            )
        _PROJECTS[name] = self
        _GENERATION[0] += 1

    @staticmethod
    def _caller_module() -> str:
        import sys

        frame = sys._getframe(2)
        return str(frame.f_globals.get("__name__", "?"))

    def __repr__(self) -> str:
        return f"Project({self.name!r}, version={self.version!r}, cells={sorted(self.cells)})"

    def register(self, cell: type[Cell]) -> None:
        existing = self.cells.get(cell.name)
        if existing is not None and (existing.__module__, existing.__qualname__) != (
            cell.__module__,
            cell.__qualname__,
        ):
            raise DuplicateNameError(
                f"project {self.name!r} already has a cell named {cell.name!r} "
                f"({existing.__module__}.{existing.__qualname__}); give "
                f"{cell.__module__}.{cell.__qualname__} another name= ."
            )
        self.cells[cell.name] = cell
        _GENERATION[0] += 1

    def cell(self, name: str) -> type[Cell]:
        """The cell called `name` in this project."""
        try:
            return self.cells[name]
        except KeyError:
            known = ", ".join(sorted(self.cells)) or "(none)"
            raise UnknownCellError(
                f"project {self.name!r} has no cell {name!r}; its cells are: {known}"
            ) from None

    def param_default(self, field: str) -> Any:
        return self.params.model_fields[field].get_default(call_default_factory=True)


def get_project(name: str) -> Project:
    """The project called `name` (it must have been imported)."""
    try:
        return _PROJECTS[name]
    except KeyError:
        known = ", ".join(sorted(_PROJECTS)) or "(none imported)"
        raise UnknownCellError(
            f"no project named {name!r}; known projects: {known}. Import the module that "
            "defines it before calling it."
        ) from None


def resolve_cell(ref: str | type[Cell], *, default_project: str | None = None) -> type[Cell]:
    """Resolve "project.cell", "cell" (within `default_project`) or a Cell class."""
    if isinstance(ref, type):
        return ref
    if not isinstance(ref, str):
        raise UnknownCellError(
            f"a cell reference must be 'project.cell' or a Cell class, got {ref!r}"
        )
    project_name, _, cell_name = ref.rpartition(".")
    if not project_name:
        if default_project is None:
            raise UnknownCellError(f"cell reference {ref!r} needs a project: write 'project.{ref}'")
        project_name = default_project
    return get_project(project_name).cell(cell_name)


def all_projects() -> dict[str, Project]:
    return dict(_PROJECTS)
