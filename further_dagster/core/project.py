"""Projects: a namespace of cells with a version, a description and project-level parameters,
and the registry that finds them by name.

`REGISTRY` holds every project defined in this process, so "project.cell" strings resolve
without passing projects around. Versions of one project coexist (core/versions.py): at most one
current version per name and any number of archived ones (`archived=True`), each its own
Project with its own cells and params. A second project with a name and version already
registered, or a second current version, is an error (`DuplicateNameError`), unless it asks to
replace the first with `replace=True`, as a notebook cell that is run again does. Tests isolate
themselves with `REGISTRY.isolated()` (or the `further_registry` pytest fixture), which puts
back the projects and cells of before.
"""

from __future__ import annotations

import os
import re
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from packaging.version import Version

from further_dagster.core.inits import FILE_NAME as INITS_FILE_NAME
from further_dagster.core.inits import Label, Selection, check_labels, load_inits, select
from further_dagster.core.names import check_identifier
from further_dagster.core.params import ProjectParams
from further_dagster.core.versions import (
    key_version,
    parse_range,
    parse_version,
    pick,
    split_address,
)
from further_dagster.errors import (
    DuplicateNameError,
    InitError,
    InvalidNameError,
    UnknownCellError,
)

if TYPE_CHECKING:
    from further_dagster.core.cell import Cell


@dataclass(frozen=True)
class RegistrySnapshot:
    """The registry's projects (every version), each with the cells it had, at one moment (see
    `restore`)."""

    projects: Mapping[
        tuple[str, Version],
        tuple[Project, Mapping[str, type[Cell]], Mapping[str, Mapping[Version, type[Cell]]]],
    ]


class Registry:
    """The projects of this process by name (each name: its versions), and a generation counter.

    A name holds at most one current (non-archived) version and any number of archived ones;
    `get` gives the default version: the current one, else the highest archived one.

    The counter changes whenever a project or cell is defined or redefined, or the registry is
    restored, so caches of resolved plans (a Session's) know to drop; it never goes back, so a
    restored registry is never mistaken for the one a cache was built against.
    """

    def __init__(self) -> None:
        self._families: dict[str, dict[Version, Project]] = {}
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
        """Register `project` under its name and version.

        With `replace`, the project of the same name and version goes, and so does the current
        version when `project` is current (a notebook cell re-run after a version bump).

        Raises:
            DuplicateNameError: another project has that name and version, or `project` and
                another project of that name are both current, and `replace` is false.
        """
        with self._lock:
            family = self._families.setdefault(project.name, {})
            for version, other in list(family.items()):
                if other is project:
                    continue
                same = version == project.parsed_version
                both_current = not other.archived and not project.archived
                if (same or both_current) and replace:
                    del family[version]
                elif same or both_current:
                    raise DuplicateNameError(_duplicate_message(other, project))
            family[project.parsed_version] = project
            self._generation += 1

    def get(self, name: str) -> Project:
        """The default version of the project called `name`.

        Raises:
            UnknownCellError: no such project is defined; the message lists the known ones.
        """
        return default_of(self._family(name))

    def family(self, name: str) -> dict[Version, Project]:
        """Every version of the project called `name` (a copy: version -> project).

        Raises:
            UnknownCellError: no such project is defined; the message lists the known ones.
        """
        return dict(self._family(name))

    def _family(self, name: str) -> dict[Version, Project]:
        family = self._families.get(name)
        if not family:
            known = ", ".join(sorted(n for n, f in self._families.items() if f))
            raise UnknownCellError(
                f"no project named {name!r}; known projects: {known or '(none imported)'}. "
                "Import the module that defines it before calling it."
            )
        return family

    def siblings(self, project: Project) -> list[Project]:
        """The other registered versions of `project`'s name, highest first; none when
        `project` itself is not registered (it was replaced)."""
        family = self._families.get(project.name, {})
        if family.get(project.parsed_version) is not project:
            return []
        return [p for v, p in sorted(family.items(), reverse=True) if p is not project]

    def projects(self) -> dict[str, Project]:
        """A copy of the registry: name -> default version."""
        return {name: default_of(f) for name, f in self._families.items() if f}

    def __contains__(self, name: object) -> bool:
        return bool(self._families.get(name)) if isinstance(name, str) else False

    def snapshot(self) -> RegistrySnapshot:
        """The projects and their cells now, to `restore` later."""
        with self._lock:
            return RegistrySnapshot(
                {
                    (name, version): (
                        p,
                        dict(p.cells),
                        {n: dict(v) for n, v in p.versions.items()},
                    )
                    for name, family in self._families.items()
                    for version, p in family.items()
                }
            )

    def restore(self, snapshot: RegistrySnapshot) -> None:
        """Put back the projects of `snapshot`, each with exactly the cells it had then.

        Projects defined since are forgotten and cells added since to a snapshotted project are
        removed; the generation moves forward, never back.
        """
        with self._lock:
            self._families = {}
            for (name, version), (project, cells, versions) in snapshot.projects.items():
                self._families.setdefault(name, {})[version] = project
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


def default_of(family: Mapping[Version, Project]) -> Project:
    """The current (non-archived) version of a project, else its highest archived one."""
    current = [p for p in family.values() if not p.archived]
    return current[0] if current else family[max(family)]


def _duplicate_message(previous: Project, new: Project) -> str:
    modules = sorted({cell.__module__ for cell in previous.cells.values()})
    where = f"; its cells come from {', '.join(modules)}" if modules else ""
    name = previous.name
    if previous.parsed_version == new.parsed_version:
        return (
            f"a project named {name!r} is already defined at version {previous.version} "
            f"({previous.address}{where}); project names must be unique in a process. Rename "
            "the new one, give it another version (an older one kept beside the current one is "
            f"Project({name!r}, version='...', archived=True)), or, to redefine the project on "
            f"purpose (e.g. when re-running a notebook cell), write Project({name!r}, ..., "
            "replace=True)."
        )
    return (
        f"project {name!r} would have two current versions: {previous.version} (already "
        f"defined{where}) and {new.version}. Keep the older one beside the current one as an "
        f"archived version: Project({name!r}, version="
        f"{min(previous, new, key=lambda p: p.parsed_version).version!r}, archived=True); or "
        f"rename the new one; or, to redefine the project on purpose, write "
        f"Project({name!r}, ..., replace=True)."
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
        version: a PEP 440 range of the called project's version; the highest version in the
            code it allows is the one called (None: the default version).
    """

    project: str
    translations: Mapping[str, str]
    version: str | None = None


def _call_decls(owner: str, calls: Any) -> dict[str, CallDecl]:
    """Normalize `Project(calls=...)`: a list of names, or name -> None | range | translations
    (with an optional `"version"` range among them)."""
    if calls is None:
        return {}
    if isinstance(calls, str):
        calls = [calls]
    if not isinstance(calls, Mapping):
        calls = {name: None for name in calls}
    decls: dict[str, CallDecl] = {}
    for name, how in calls.items():
        check_identifier("called project", name, fix=f"Fix Project({owner!r}, calls=...).")
        where = f"Project({owner!r}, calls={{{name!r}: {how!r}}})"
        if how is None:
            decls[name] = CallDecl(name, {})
        elif isinstance(how, str):
            parse_range(how, where=where)
            decls[name] = CallDecl(name, {}, version=how)
        elif isinstance(how, Mapping) and all(
            isinstance(k, str) and isinstance(v, str) for k, v in how.items()
        ):
            # "version" is reserved here as in Req: a range, never a translated param
            translations = {k: v for k, v in how.items() if k != "version"}
            version = how.get("version")
            if version is not None:
                parse_range(version, where=where)
            decls[name] = CallDecl(name, translations, version=version)
        else:
            raise InvalidNameError(
                f"{where}: give None, a version range string such as '>=1,<2', or "
                "translations {'called_param': 'caller_param'} (a 'version' entry among them "
                "is the range)"
            )
    return decls


class Project:
    """A namespace of cells.

    Args:
        name: identifier, the asset key prefix and Dagster group of its cells; unique among
            the projects of a process, except for versions of one project kept side by side.
        version: the project's PEP 440 version. Unless it equals 1 (`"1"`, `"1.0"`) it enters
            the logic keys of the project's cells, so the results of a version stay found
            once it is archived.
        archived: an older version kept in the code beside the current one (at most one
            current version per name). Its cells are addressed `"name@version.cell"`, its
            Dagster assets are keyed `["name_v<version>", cell]` in the group `name`, and
            callers reach it with a range: `Project(..., calls={name: ">=1,<2"})`.
        description: shown in Dagster.
        params: a `ProjectParams` subclass; cells subscribe to its fields with
            `project_params = ("field", ...)` and receive the session's value (or the default).
        replace: redefine the project called `name` at this version, and, when this one is
            current, its current version (their cells are then no longer found by name),
            instead of raising `DuplicateNameError`: for a notebook cell that is run again.
        inits: the project's `project_inits.yaml` (its labels, see core/inits.py); default:
            `project_inits.yaml` beside the module that defines the project's cells.
        calls: the other projects whose cells this project's cells require, as a list of
            names or `{"lib": {"window": "smoothing"}}` (translations: the called project's
            `window` takes this project's `smoothing`). A cell requiring a cell of a project
            not declared here fails when the definition graph is loaded. A version range
            picks the called version: `{"lib": ">=1,<2"}`, or among translations
            `{"lib": {"version": ">=1,<2", "window": "smoothing"}}`.

    Raises:
        InvalidNameError: `name` is not a plain identifier, or `params` is not a ProjectParams
            subclass.
        VersionError: `version` is not PEP 440, or a range in `calls` is not a PEP 440 range.
        DuplicateNameError: a project called `name` exists at this version, or both it and
            this one are current, and `replace` is false.
    """

    def __init__(
        self,
        name: str,
        *,
        version: str | int = "1",
        archived: bool = False,
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
        self.version = str(version)
        self.parsed_version = parse_version(version, where=f"Project({name!r})")
        self.archived = archived
        # An archived version is addressed (and keyed in Dagster) with its version, as a cell.
        self.address = f"{name}@{self.parsed_version}" if archived else name
        self.asset_name = (
            f"{name}_v{re.sub(r'[^A-Za-z0-9]', '_', str(self.parsed_version))}"
            if archived
            else name
        )
        self.key_version = key_version(self.parsed_version)
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
        archived = ", archived=True" if self.archived else ""
        return (
            f"Project({self.name!r}, version={self.version!r}{archived}, "
            f"cells={sorted(self.cells)})"
        )

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
                f"project {self.address!r} has no cell {name!r}; its cells are: {known}"
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


def get_project(name: str, version: str | None = None, *, caller: str = "the call") -> Project:
    """The project called `name` (it must have been imported): its default version, or the
    highest that the PEP 440 range `version` allows (a bare "1.4": that version exactly).

    Raises:
        UnknownCellError: no such project; the message lists the known ones.
        VersionError: no version of it satisfies `version`; the message names `caller`.
    """
    if version is None:
        return REGISTRY.get(name)
    return pick(
        REGISTRY.family(name),
        version,
        what=f"project {name!r}",
        caller=caller,
        keep=f"an archived project: Project({name!r}, version='...', archived=True)",
    )[1]


def resolve_cell(
    ref: str | type[Cell], *, default_project: str | Project | None = None
) -> type[Cell]:
    """Resolve an address `project[@version].cell[@api_version]` (core/versions.py), a bare
    "cell" (within `default_project`) or a Cell class.

    Given as a Project, `default_project` is the caller: a cell of its own project resolves
    in that very version, and a cell of a project it declares calls into in the highest
    version the declared range allows.

    Raises:
        UnknownCellError: the reference names no known project or cell.
        VersionError: no version satisfies the address or the caller's declared range.
    """
    if isinstance(ref, type):
        return ref
    if not isinstance(ref, str):
        raise UnknownCellError(
            f"a cell reference must be 'project.cell' or a Cell class, got {ref!r}"
        )
    address = split_address(ref)
    if address is None:
        raise UnknownCellError(
            f"cell reference {ref!r} is not an address: write 'project.cell', "
            "'project.cell@1.4' (a cell's api_version) or 'project@1.4.cell' (a project version)"
        )
    caller = default_project if isinstance(default_project, Project) else None
    name = address.project
    if name is None:
        if default_project is None:
            raise UnknownCellError(f"cell reference {ref!r} needs a project: write 'project.{ref}'")
        name = caller.name if caller is not None else str(default_project)
    decl = caller.calls.get(name) if caller is not None else None
    if address.project_version is not None:
        project = get_project(
            name, f"=={address.project_version}", caller=f"cell reference {ref!r}"
        )
    elif caller is not None and name == caller.name:
        project = caller
    elif caller is not None and decl is not None and decl.version is not None:
        project = get_project(
            name,
            decl.version,
            caller=f"Project({caller.name!r}, calls={{{name!r}: {decl.version!r}}})",
        )
    else:
        project = get_project(name)
    pinned = f"=={address.cell_version}" if address.cell_version is not None else None
    return project.cell(address.cell, pinned)


def all_projects() -> dict[str, Project]:
    """Every registered project, by name."""
    return REGISTRY.projects()
