"""Projects: a namespace of cells with a version, a description and project-level parameters,
and the registry that finds them by name.

`REGISTRY` holds every project defined in this process, so "project.cell" strings resolve
without passing projects around. A second project with a name already registered is an error
(`DuplicateNameError`), unless it asks to replace the first with `replace=True`, as a notebook
cell that is run again does. Tests isolate themselves with `REGISTRY.isolated()` (or the
`further_registry` pytest fixture), which puts back the projects and cells of before.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from further_dagster.core.inits import FILE_NAME as INITS_FILE_NAME
from further_dagster.core.inits import Label, Selection, check_labels, load_inits, select
from further_dagster.core.names import check_identifier
from further_dagster.core.params import ProjectParams
from further_dagster.core.versions import pick
from further_dagster.errors import (
    DuplicateNameError,
    InitError,
    InvalidNameError,
    UnknownCellError,
)

if TYPE_CHECKING:
    from packaging.version import Version

    from further_dagster.core.cell import Cell


@dataclass(frozen=True)
class RegistrySnapshot:
    """The registry's projects, each with the cells it had, at one moment (see `restore`)."""

    projects: Mapping[
        str,
        tuple[Project, Mapping[str, type[Cell]], Mapping[str, Mapping[Version, type[Cell]]]],
    ]


class Registry:
    """The projects of this process by name, and a generation counter.

    The counter changes whenever a project or cell is defined or redefined, or the registry is
    restored, so caches of resolved plans (a Session's) know to drop; it never goes back, so a
    restored registry is never mistaken for the one a cache was built against.
    """

    def __init__(self) -> None:
        self._projects: dict[str, Project] = {}
        self._generation = 0
        self._lock = threading.RLock()

    @property
    def generation(self) -> int:
        """The current generation (see the class docstring)."""
        return self._generation

    def bump(self) -> None:
        """Note that a definition changed: caches keyed by the generation are stale."""
        with self._lock:
            self._generation += 1

    def add(self, project: Project, *, replace: bool = False) -> None:
        """Register `project` under its name.

        Raises:
            DuplicateNameError: another project has that name and `replace` is false.
        """
        with self._lock:
            previous = self._projects.get(project.name)
            if previous is not None and previous is not project and not replace:
                raise DuplicateNameError(_duplicate_message(previous))
            self._projects[project.name] = project
            self._generation += 1

    def get(self, name: str) -> Project:
        """The project called `name`.

        Raises:
            UnknownCellError: no such project is defined; the message lists the known ones.
        """
        try:
            return self._projects[name]
        except KeyError:
            known = ", ".join(sorted(self._projects)) or "(none imported)"
            raise UnknownCellError(
                f"no project named {name!r}; known projects: {known}. Import the module that "
                "defines it before calling it."
            ) from None

    def projects(self) -> dict[str, Project]:
        """A copy of the registry: name -> project."""
        return dict(self._projects)

    def __contains__(self, name: object) -> bool:
        return name in self._projects

    def snapshot(self) -> RegistrySnapshot:
        """The projects and their cells now, to `restore` later."""
        with self._lock:
            return RegistrySnapshot(
                {
                    name: (p, dict(p.cells), {n: dict(v) for n, v in p.versions.items()})
                    for name, p in self._projects.items()
                }
            )

    def restore(self, snapshot: RegistrySnapshot) -> None:
        """Put back the projects of `snapshot`, each with exactly the cells it had then.

        Projects defined since are forgotten and cells added since to a snapshotted project are
        removed; the generation moves forward, never back.
        """
        with self._lock:
            self._projects = {name: entry[0] for name, entry in snapshot.projects.items()}
            for project, cells, versions in snapshot.projects.values():
                if project.cells != cells:
                    project.cells.clear()
                    project.cells.update(cells)
                if project.versions != versions:
                    project.versions.clear()
                    project.versions.update({n: dict(v) for n, v in versions.items()})
            self._generation += 1

    @contextmanager
    def isolated(self) -> Iterator[Registry]:
        """Within the block, define projects freely; on exit the registry is as before.

        A module imported inside the block registers its projects only then: they vanish on
        exit while the module stays imported, so import such modules before entering.
        """
        saved = self.snapshot()
        try:
            yield self
        finally:
            self.restore(saved)


def _duplicate_message(previous: Project) -> str:
    modules = sorted({cell.__module__ for cell in previous.cells.values()})
    where = f" (its cells come from {', '.join(modules)})" if modules else ""
    return (
        f"a project named {previous.name!r} is already defined{where}; project names must be "
        "unique in a process. Rename the new one, or, to redefine the project on purpose (e.g. "
        f"when re-running a notebook cell), write Project({previous.name!r}, ..., replace=True)."
    )


REGISTRY = Registry()
"""The registry of this process."""


def generation() -> int:
    """A counter that changes whenever any project or cell is defined or redefined."""
    return REGISTRY.generation


@dataclass(frozen=True)
class CallDecl:
    """A project's declared call into another project.

    Attributes:
        project: the called project's name.
        translations: called project's param -> the calling project's param whose value it
            takes (the Further seed's translations); the called project's cells see no other
            param of the caller.
        version: a version range of the called project (informational until versions coexist).
    """

    project: str
    translations: Mapping[str, str]
    version: str | None = None


def _call_decls(owner: str, calls: Any) -> dict[str, CallDecl]:
    """Normalize `Project(calls=...)`: a list of names, or name -> None | translations | range."""
    if calls is None:
        return {}
    if isinstance(calls, str):
        calls = [calls]
    if not isinstance(calls, Mapping):
        calls = {name: None for name in calls}
    decls: dict[str, CallDecl] = {}
    for name, how in calls.items():
        check_identifier("called project", name, fix=f"Fix Project({owner!r}, calls=...).")
        if how is None:
            decls[name] = CallDecl(name, {})
        elif isinstance(how, str):
            decls[name] = CallDecl(name, {}, version=how)
        elif isinstance(how, Mapping) and all(
            isinstance(k, str) and isinstance(v, str) for k, v in how.items()
        ):
            decls[name] = CallDecl(name, dict(how))
        else:
            raise InvalidNameError(
                f"Project({owner!r}, calls={{{name!r}: {how!r}}}): give None, a version range "
                f"string, or translations {{'called_param': 'caller_param'}}"
            )
    return decls


class Project:
    """A namespace of cells.

    Args:
        name: identifier, the asset key prefix and Dagster group of its cells; unique among
            the projects of a process.
        version: the project's interface version (informational; keys come from cells).
        description: shown in Dagster.
        params: a `ProjectParams` subclass; cells subscribe to its fields with
            `project_params = ("field", ...)` and receive the session's value (or the default).
        replace: redefine the project called `name` if one exists (its cells are then no longer
            found by name), instead of raising `DuplicateNameError`: for a notebook cell that is
            run again.
        inits: the project's `project_inits.yaml` (its labels, see core/inits.py); default:
            `project_inits.yaml` beside the module that defines the project's cells.
        calls: the other projects whose cells this project's cells require, as a list of
            names or `{"lib": {"window": "smoothing"}}` (translations: the called project's
            `window` takes this project's `smoothing`). A cell requiring a cell of a project
            not declared here fails when the definition graph is loaded.

    Raises:
        InvalidNameError: `name` is not a plain identifier, or `params` is not a ProjectParams
            subclass.
        DuplicateNameError: a project called `name` exists and `replace` is false.
    """

    def __init__(
        self,
        name: str,
        *,
        version: str = "1",
        description: str = "",
        params: type[ProjectParams] | None = None,
        replace: bool = False,
        inits: str | os.PathLike[str] | None = None,
        calls: Sequence[str] | Mapping[str, Any] | None = None,
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
        self.cells: dict[str, type[Cell]] = {}  # name -> default version (core/versions.py)
        self.versions: dict[str, dict[Version, type[Cell]]] = {}
        self.calls: dict[str, CallDecl] = _call_decls(name, calls)
        self._inits = Path(inits) if inits is not None else None
        self._labels: tuple[tuple[Path, float], dict[str, Label]] | None = None
        REGISTRY.add(self, replace=replace)

    @property
    def inits_path(self) -> Path | None:
        """Where the project's labels live (None: no cell yet, so no module to look beside)."""
        if self._inits is not None:
            return self._inits
        for cell in self.cells.values():
            module = sys.modules.get(cell.__module__)
            file = getattr(module, "__file__", None)
            if file:
                return Path(file).parent / INITS_FILE_NAME
        return None

    def labels(self) -> dict[str, Label]:
        """The project's labels, read from `inits_path` (re-read when the file changes) and
        checked against its cells, params and resource cells."""
        path = self.inits_path
        if path is None:
            return {}
        try:
            stamp = (path, path.stat().st_mtime)
        except FileNotFoundError:
            if self._inits is not None:
                raise InitError(
                    f"project {self.name!r}: its inits file {path} does not exist"
                ) from None
            return {}
        if self._labels is not None and self._labels[0] == stamp:
            return self._labels[1]
        labels = load_inits(path)
        check_labels(
            labels,
            project=self.name,
            cells=self.cells,
            params=self.params.model_fields,
            resources=[n for n, c in self.cells.items() if c.is_resource],
        )
        for label in labels.values():
            for caller, routes in label.called_assignments.items():
                for called in routes:
                    if called not in self.calls:
                        raise InitError(
                            f"{label.where}: label {label.name!r} routes a label of project "
                            f"{called!r} for cell {caller!r}, but project {self.name!r} does "
                            f"not declare calls into it (declared: "
                            f"{sorted(self.calls) or 'none'}); add it to Project(calls=...)"
                        )
        self._labels = (stamp, labels)
        return labels

    def select_labels(self, chosen: str | Sequence[str] | None) -> Selection:
        """What the labels `chosen` set (merged; see core/inits.py `select`)."""
        if chosen is None:
            return Selection()
        return select(self.labels(), chosen)

    def __repr__(self) -> str:
        return f"Project({self.name!r}, version={self.version!r}, cells={sorted(self.cells)})"

    def register(self, cell: type[Cell]) -> None:
        """Add `cell` to the project (called by `Cell.__init_subclass__`).

        A class of the same module and qualified name replaces the previous one (a notebook
        re-running a cell's class statement). Versions of one name coexist: at most one
        current class (not archived) and any number of archived ones, one per api_version.

        Raises:
            DuplicateNameError: another current class already has this cell name, or another
                class has this name and api_version.
        """
        versions = self.versions.setdefault(cell.name, {})
        for version, other in list(versions.items()):
            if _same_class(other, cell):
                del versions[version]
        current = [c for c in versions.values() if not c.archived]
        if current and not cell.archived:
            existing = current[0]
            raise DuplicateNameError(
                f"project {self.name!r} already has a cell named {cell.name!r} "
                f"({existing.__module__}.{existing.__qualname__}, api_version "
                f"{existing.version}); give {cell.__module__}.{cell.__qualname__} another "
                "name= , or keep the older one beside it as an archived version: "
                f"`class {existing.__qualname__}(Cell, project=..., name={cell.name!r}, "
                "archived=True)` with its own api_version."
            )
        same = versions.get(cell.version)
        if same is not None:
            raise DuplicateNameError(
                f"project {self.name!r} already has cell {cell.name!r} at api_version "
                f"{cell.version} ({same.__module__}.{same.__qualname__}); give "
                f"{cell.__module__}.{cell.__qualname__} another api_version or name= ."
            )
        versions[cell.version] = cell
        self.cells[cell.name] = _default_version(versions)
        REGISTRY.bump()

    def all_cells(self) -> list[type[Cell]]:
        """Every cell class of the project, archived versions included."""
        return [c for versions in self.versions.values() for c in versions.values()]

    def cell(self, name: str, version: str | None = None) -> type[Cell]:
        """The cell called `name` in this project: its current version, or the highest that
        the PEP 440 range `version` allows.

        Raises:
            UnknownCellError: the project has no such cell; the message lists its cells.
            VersionError: no version of it satisfies `version`.
        """
        try:
            found = self.cells[name]
        except KeyError:
            known = ", ".join(sorted(self.cells)) or "(none)"
            raise UnknownCellError(
                f"project {self.name!r} has no cell {name!r}; its cells are: {known}"
            ) from None
        if version is None:
            return found
        return pick(self.versions[name], version, what=found.full_name, caller="the call")[1]

    def param_default(self, field: str) -> Any:
        """The default value of the project parameter `field`."""
        return self.params.model_fields[field].get_default(call_default_factory=True)


def _same_class(a: type[Cell], b: type[Cell]) -> bool:
    return (a.__module__, a.__qualname__) == (b.__module__, b.__qualname__)


def _default_version(versions: Mapping[Version, type[Cell]]) -> type[Cell]:
    """The current (non-archived) class, else the highest archived one."""
    current = [c for c in versions.values() if not c.archived]
    return current[0] if current else versions[max(versions)]


def get_project(name: str) -> Project:
    """The project called `name` (it must have been imported).

    Raises:
        UnknownCellError: no such project; the message lists the known ones.
    """
    return REGISTRY.get(name)


def resolve_cell(ref: str | type[Cell], *, default_project: str | None = None) -> type[Cell]:
    """Resolve "project.cell", "cell" (within `default_project`) or a Cell class.

    Raises:
        UnknownCellError: the reference names no known project or cell.
    """
    if isinstance(ref, type):
        return ref
    if not isinstance(ref, str):
        raise UnknownCellError(
            f"a cell reference must be 'project.cell' or a Cell class, got {ref!r}"
        )
    head, at, pinned = ref.partition("@")  # "project.cell@1.4": that version exactly
    project_name, _, cell_name = head.rpartition(".")
    if not project_name:
        if default_project is None:
            raise UnknownCellError(f"cell reference {ref!r} needs a project: write 'project.{ref}'")
        project_name = default_project
    return get_project(project_name).cell(cell_name, f"=={pinned}" if at else None)


def all_projects() -> dict[str, Project]:
    """Every registered project, by name."""
    return REGISTRY.projects()
