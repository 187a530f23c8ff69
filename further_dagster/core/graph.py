"""The definition graph: every loaded cell, its resolved req_cells targets, checked once.

Built at load time (a Session or Definitions), so a dependency cycle, an unknown target or an
edge value for a field the target does not have fails before anything runs.
"""

from __future__ import annotations

from collections.abc import Iterable

from further_dagster.core.cell import Cell
from further_dagster.core.project import Project, resolve_cell
from further_dagster.errors import (
    CellDefinitionError,
    DependencyCycleError,
    DuplicateNameError,
    UnknownCellError,
)


class DefinitionGraph:
    """All cells of the given projects (and of projects their edges reach), validated."""

    def __init__(self, projects: Iterable[Project]) -> None:
        self.projects: dict[str, Project] = {}
        for project in projects:
            other = self.projects.get(project.name)
            if other is not None and other is not project:
                raise DuplicateNameError(f"two different projects are named {project.name!r}")
            self.projects[project.name] = project
        self.targets: dict[type[Cell], dict[str, type[Cell]]] = {}
        pending = [cell for p in self.projects.values() for cell in p.cells.values()]
        while pending:
            cell = pending.pop()
            if cell in self.targets:
                continue
            self.targets[cell] = self._resolve_edges(cell)
            for target in self.targets[cell].values():
                self.projects.setdefault(target.project.name, target.project)
                if target not in self.targets:
                    pending.append(target)
        self.order = self._topological_order()

    def _resolve_edges(self, cell: type[Cell]) -> dict[str, type[Cell]]:
        edges: dict[str, type[Cell]] = {}
        for edge, req in cell.req_cells.items():
            try:
                target = resolve_cell(req.target, default_project=cell.project.name)
            except UnknownCellError as exc:
                raise UnknownCellError(f"{cell.full_name}.req_cells[{edge!r}]: {exc}") from None
            if not (isinstance(target, type) and issubclass(target, Cell)):
                raise CellDefinitionError(
                    f"{cell.full_name}.req_cells[{edge!r}] targets {target!r}, which is not a Cell"
                )
            unknown = sorted(set(req.values) - set(target.Specs.model_fields))
            if unknown:
                valid = ", ".join(sorted(target.Specs.model_fields)) or "(none)"
                raise CellDefinitionError(
                    f"{cell.full_name}.req_cells[{edge!r}] passes {unknown} to "
                    f"{target.full_name}, whose Specs have no such field; valid fields: {valid}."
                )
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
                            + ". Break it by removing one of these edges."
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
        return sorted(set(self.targets[cell].values()), key=lambda c: c.full_name, reverse=True)

    def cells(self) -> list[type[Cell]]:
        """Every cell, dependencies first."""
        return list(self.order)

    def top_cells(self) -> list[type[Cell]]:
        """Cells no other cell requires: the natural roots of a project's default run."""
        required = {t for edges in self.targets.values() for t in edges.values()}
        return [c for c in self.order if c not in required]

    def dependents(self, cell: type[Cell]) -> list[type[Cell]]:
        return [c for c, edges in self.targets.items() if cell in edges.values()]
