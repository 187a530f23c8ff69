"""The definition graph: every loaded cell, its resolved req_cells targets, checked once.

Built at load time (a Session or Definitions), so a dependency cycle, an unknown target, a
version pin nothing satisfies or an edge value for a field the target does not have fails
before anything runs. Projects are keyed by their address: the name for the current version,
`name@version` for an archived one (core/project.py); every registered version of a given
project is loaded with it, as every version of a cell is, so they coexist in one graph.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from further_dagster.core.cell import Cell, Req
from further_dagster.core.project import REGISTRY, Project, resolve_cell
from further_dagster.core.versions import parse_range, pick
from further_dagster.errors import (
    CellDefinitionError,
    DependencyCycleError,
    DuplicateNameError,
    IncrementsError,
    ParameterKindError,
    TranslationError,
    UndeclaredCallError,
    UnknownCellError,
    VersionError,
)


def _check_translations(
    project: Project, loaded: dict[str, Project], reached: dict[tuple[str, str], set[Project]]
) -> None:
    """Every translation of `project`'s declared calls names params both sides have (each
    version of the called project that its cells reach, else the loaded default)."""
    for name, decl in project.calls.items():
        if not decl.translations:
            continue
        default = loaded.get(name)
        called = reached.get((project.address, name)) or ({default} if default else set())
        for version in sorted(called, key=lambda p: p.parsed_version):
            _check_translation(project, name, decl.translations, version)


def _check_translation(
    project: Project, name: str, translations: Mapping[str, str], called: Project
) -> None:
    theirs, ours = called.params.model_fields, project.params.model_fields
    for to, source in translations.items():
        if to not in theirs:
            raise TranslationError(
                f"Project({project.name!r}, calls={{{name!r}: {{{to!r}: {source!r}}}}}): "
                f"project {called.address!r} has no param {to!r}; its params: "
                f"{sorted(theirs) or '(none)'}"
            )
        if source not in ours:
            raise TranslationError(
                f"Project({project.name!r}, calls={{{name!r}: {{{to!r}: {source!r}}}}}): "
                f"project {project.address!r} has no param {source!r} to translate; its "
                f"params: {sorted(ours) or '(none)'}"
            )


def _check_call(cell: type[Cell], where: str, target: type[Cell]) -> None:
    """`cell`'s project declares calls into `target`'s project, and its declared range allows
    that version. Another version of a cell's own project needs no declaration."""
    caller, called = cell.project, target.project
    if called.name == caller.name:
        return
    decl = caller.calls.get(called.name)
    if decl is None:
        declared = sorted(caller.calls) or "none"
        raise UndeclaredCallError(
            f"{where} requires {target.full_name}, but project {caller.address!r} does not "
            f"declare calls into project {called.name!r} (declared: {declared}). Write "
            f"Project({caller.name!r}, calls=[{called.name!r}]) (or "
            f"calls={{{called.name!r}: {{'its_param': 'our_param'}}}} to translate params, "
            f"calls={{{called.name!r}: '>=1,<2'}} to pick a version)."
        )
    if decl.version is not None and not parse_range(decl.version, where=where).contains(
        called.parsed_version, prereleases=True
    ):
        versions = ", ".join(str(v) for v in sorted(REGISTRY.family(called.name)))
        raise VersionError(
            f"{where} requires {target.full_name} (project {called.name!r} version "
            f"{called.version}), but project {caller.address!r} declares "
            f"calls={{{called.name!r}: {decl.version!r}}}, which does not allow it; versions "
            f"of {called.name!r} in the code: {versions}. Drop the version from the address, "
            "or widen the declared range."
        )


def _check_iterative(cell: type[Cell], edge: str, req: Req, target: type[Cell]) -> None:
    """An ITER field is a field of the caller too; `increments=` targets an IncrementingCell."""
    where = f"{cell.full_name}.req_cells[{edge!r}]"
    for name in req.iter_fields:
        if name not in cell.Specs.model_fields:
            raise ParameterKindError(
                f"{where}: {name}=ITER(...) passes {cell.full_name}'s own {name!r} plus the "
                f"delta, but its Specs have no field {name!r}; add it to {cell.full_name}.Specs"
            )
    if req.increments is not None and not target.is_incrementing:
        raise IncrementsError(
            f"{where}: increments={req.increments!r}, but {target.full_name} is not an "
            "IncrementingCell; drop increments= or make the target incrementing"
        )


class DefinitionGraph:
    """All cells of the given projects (and of projects their edges reach), validated."""

    def __init__(self, projects: Iterable[Project]) -> None:
        self.projects: dict[str, Project] = {}  # address -> project (module docstring)
        given = list(projects)
        for project in given + [s for p in given for s in REGISTRY.siblings(p)]:
            self._add_project(project)
        # (calling project's address, called project's name) -> the versions its cells reach
        self._reached: dict[tuple[str, str], set[Project]] = {}
        self.targets: dict[type[Cell], dict[str, type[Cell]]] = {}
        pending = [cell for p in self.projects.values() for cell in p.all_cells()]
        while pending:
            cell = pending.pop()
            if cell in self.targets:
                continue
            self.targets[cell] = self._resolve_edges(cell)
            for target in self.targets[cell].values():
                if target.project is not cell.project:
                    self._add_project(target.project)
                    slot = (cell.project.address, target.project.name)
                    self._reached.setdefault(slot, set()).add(target.project)
                if target not in self.targets:
                    pending.append(target)
        self.order = self._topological_order()
        for project in list(self.projects.values()):
            _check_translations(project, self.projects, self._reached)

    def _add_project(self, project: Project) -> None:
        other = self.projects.setdefault(project.address, project)
        if other is not project:
            raise DuplicateNameError(
                f"two different projects are addressed {project.address!r} (version "
                f"{project.version}); rename one, or give one another version"
            )

    def _resolve_edges(self, cell: type[Cell]) -> dict[str, type[Cell]]:
        edges: dict[str, type[Cell]] = {}
        for edge, req in cell.req_cells.items():
            where = f"{cell.full_name}.req_cells[{edge!r}]"
            try:
                # the caller's Project: its own cells in its own version, called projects in
                # the version its calls= range picks
                target = resolve_cell(req.target, default_project=cell.project)
            except UnknownCellError as exc:
                raise UnknownCellError(f"{where}: {exc}") from None
            except VersionError as exc:
                raise VersionError(f"{where}: {exc}") from None
            if not (isinstance(target, type) and issubclass(target, Cell)):
                raise CellDefinitionError(f"{where} targets {target!r}, which is not a Cell")
            if req.version is not None:
                target = pick(
                    target.project.versions.get(target.name, {target.version: target}),
                    req.version,
                    what=f"{target.project.address}.{target.name}",
                    caller=where,
                )[1]
            if target.project is not cell.project:
                _check_call(cell, where, target)
            unknown = sorted(set(req.values) - set(target.Specs.model_fields))
            if unknown:
                valid = ", ".join(sorted(target.Specs.model_fields)) or "(none)"
                others = sorted(target.project.versions.get(target.name, {}))
                hint = (
                    f" {target.full_name} is api_version {target.version}; versions in the "
                    f"code: {', '.join(map(str, others))}: pin the one these values are for, "
                    f"e.g. Req({target.name!r}, version='<{target.version}')."
                    if len(others) > 1
                    else ""
                )
                raise CellDefinitionError(
                    f"{cell.full_name}.req_cells[{edge!r}] passes {unknown} to "
                    f"{target.full_name}, whose Specs have no such field; valid fields: "
                    f"{valid}.{hint}"
                )
            _check_iterative(cell, edge, req, target)
            edges[edge] = target
        return edges

    def _topological_order(self) -> list[type[Cell]]:
        """Dependencies first; raises DependencyCycleError naming the cycle."""
        order: list[type[Cell]] = []
        state: dict[type[Cell], int] = {}  # 1 = on the current path, 2 = done
        for start in sorted(self.targets, key=lambda c: c.full_name):
            if state.get(start) == 2:
                continue
            path: list[type[Cell]] = []
            stack: list[tuple[type[Cell], list[type[Cell]]]] = [(start, self._deps_of(start))]
            state[start] = 1
            path.append(start)
            while stack:
                node, remaining = stack[-1]
                if remaining:
                    nxt = remaining.pop()
                    if state.get(nxt) == 1:
                        cycle = path[path.index(nxt) :] + [nxt]
                        raise DependencyCycleError(
                            "req_cells form a cycle: "
                            + " -> ".join(c.full_name for c in cycle)
                            + ". Break it by removing one of these edges, or make one of "
                            "them an ITER edge with a switch (a loop unrolled to a known "
                            "depth): Req(..., iteration=ITER(-1), switch=lambda s: "
                            "s.iteration > 0)."
                        )
                    if state.get(nxt) != 2:
                        state[nxt] = 1
                        path.append(nxt)
                        stack.append((nxt, self._deps_of(nxt)))
                    continue
                stack.pop()
                path.pop()
                state[node] = 2
                order.append(node)
        return order

    def _deps_of(self, cell: type[Cell]) -> list[type[Cell]]:
        return sorted(set(self.ordered_targets(cell)), key=lambda c: c.full_name, reverse=True)

    def ordered_targets(self, cell: type[Cell]) -> list[type[Cell]]:
        """The targets of `cell`'s edges that order it (every edge but stepping ITER edges: a
        loop is allowed through them, core/iterative.py)."""
        reqs = cell.req_cells
        return [t for e, t in self.targets[cell].items() if not reqs[e].stepping]

    def cells(self) -> list[type[Cell]]:
        """Every cell, dependencies first."""
        return list(self.order)

    def top_cells(self) -> list[type[Cell]]:
        """Cells no other cell requires: the natural roots of a project's default run."""
        required = {t for cell in self.targets for t in self.ordered_targets(cell)}
        return [c for c in self.order if c not in required]

    def dependents(self, cell: type[Cell]) -> list[type[Cell]]:
        return [c for c, edges in self.targets.items() if cell in edges.values()]
