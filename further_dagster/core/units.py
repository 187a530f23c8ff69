"""Recursive units: a loop of cells run round by round until its last cell reports convergence.

`RecursiveUnit("em", project=p, cells=("e_step", "m_step"), max_rounds=200)` declares one
composite node over a loop of cells that already carry the round in an ITER loop (core/
iterative.py: e.g. `m_step` requires `Req("e_step", round=ITER(0))` and `e_step` requires
`Req("m_step", round=ITER(-1), switch=lambda s: s.round > 0)`). The unit is an ordinary cell
(callers require it like any other); its make() asks for the last cell at round `start`, then
`start + 1`, ... as a DYN child (engine/dynamic.py), each round a memoized instance, until the
last cell's `converged` contribution is True, and returns that round's contributions plus the
round. The unit's Specs (every loop cell's fields but the round) reach every loop cell that
declares them, in every round (`loop_specs`: the rounds resolve with them as session-addressed
values), so `Req("em", tol=0.1)` sets `tol` on each round's cells, not on the top one alone.
Rounds already stored are loaded, not recomputed, so a re-run resumes at the first round
not stored. Termination is dynamic (seen only while the rounds run), which is why this is a DYN
child and not a statically unrolled ITER loop; exceeding `max_rounds` fails the unit with a
`ConvergenceError` naming it (recorded like any failing make()).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import create_model

from further_dagster.core.cell import Cell, Req
from further_dagster.core.params import DYN, Specs
from further_dagster.core.project import Project, resolve_cell
from further_dagster.errors import CellDefinitionError, ConvergenceError, UnknownCellError


def RecursiveUnit(  # noqa: N802 - declared like a class: it returns one
    name: str,
    *,
    project: Project,
    cells: Sequence[str],
    max_rounds: int,
    field: str = "round",
    converged: str = "converged",
    start: int = 0,
    logic_version: int | str = 1,
) -> type[Cell]:
    """Declare the recursive unit `name` of `project` over the loop `cells` (names in
    `project`, the last one reporting convergence); returns its Cell class.

    Its Specs are the loop cells' fields without `field` (the last cell's declaration where
    several cells declare one), each passed to every loop cell declaring it in every round;
    its contributions are the last cell's plus `field` (the converged round).

    Raises:
        CellDefinitionError: an unknown cell, a cell without the `field` Specs field, a last
            cell without a bool `converged` contribution, cells that do not form a loop through
            an ITER edge, or `max_rounds` < 1.
    """
    where = f"RecursiveUnit({name!r}, cells={tuple(cells)!r})"
    if isinstance(max_rounds, bool) or not isinstance(max_rounds, int) or max_rounds < 1:
        raise CellDefinitionError(f"{where}: max_rounds={max_rounds!r} must be an integer >= 1")
    found = _cells(project, cells, where)
    for cell in found:
        if field not in cell.Specs.model_fields:
            raise CellDefinitionError(
                f"{where}: {cell.full_name}.Specs has no field {field!r} (the round); add it or "
                "pass field='...'"
            )
    last = found[-1]
    if last.contributions.get(converged) is not bool:
        raise CellDefinitionError(
            f"{where}: the last cell, {last.full_name}, must declare a bool contribution "
            f"{converged!r} (True at the converged round)"
        )
    _check_loop(found, where)
    fields: dict[str, Any] = {}
    for cell in (last, *found[:-1]):  # a field several cells declare: the last cell's type
        for n, info in cell.Specs.model_fields.items():
            if n != field and n not in fields:
                fields[n] = (info.annotation, info)
    unit_specs = create_model(f"{_camel(name)}Specs", __base__=Specs, **fields)

    own = tuple(n for n in last.Specs.model_fields if n != field)

    def make(self: Cell) -> Mapping[str, Any]:
        # the other loop cells receive their fields through the DYN child's call context
        # (`loop_specs`, applied by engine/dynamic.py); the edge takes the last cell's only
        values = {n: getattr(self.specs, n) for n in own}
        for round_ in range(start, start + max_rounds):
            result = self.call("last", **{field: round_}, **values)
            if result[converged]:
                return {**result.to_dict(), field: round_}
        raise ConvergenceError(
            f"recursive unit {project.name}.{name}: {last.full_name} did not report "
            f"{converged}=True within max_rounds={max_rounds} (rounds {start}.."
            f"{start + max_rounds - 1}, all stored); raise max_rounds or loosen the criterion"
        )

    attrs = {
        "__module__": last.__module__,
        "__doc__": f"Recursive unit over {', '.join(c.full_name for c in found)}.",
        # the loop cells' versions are the unit's too: its DYN edge keys only the last cell's
        "logic_version": f"{logic_version}:" + ",".join(str(c.logic_version) for c in found),
        "Specs": unit_specs,
        "req_cells": {"last": Req(last, **dict[str, Any]({field: DYN}))},
        "contributions": {**last.contributions, field: int},
        "make": make,
        "unit_cells": tuple(found),
        "max_rounds": max_rounds,
    }
    return type(_camel(name), (Cell,), attrs, project=project, name=name)


def loop_specs(
    unit: type[Cell], specs: Specs, addressed: Mapping[str, Mapping[str, Any]]
) -> Mapping[str, Mapping[str, Any]]:
    """The session-addressed Specs (`CallContext.specs`) under which a unit's rounds resolve:
    `addressed` (the call's own `specs=`, which win for the cell they name) over the unit's
    Specs values, for every loop cell declaring the field. So a unit's Specs reach every cell
    of every round, not only the last cell the unit calls. Any other cell: `addressed`."""
    cells: tuple[type[Cell], ...] = getattr(unit, "unit_cells", ())
    if not cells:
        return addressed
    values = specs.__dict__
    found = dict(addressed)
    for cell in cells:
        declared = cell.Specs.model_fields
        given = {n: v for n, v in values.items() if n in declared}
        if given:
            found[cell.full_name] = {**given, **addressed.get(cell.full_name, {})}
    return found


def _cells(project: Project, names: Sequence[str], where: str) -> list[type[Cell]]:
    if isinstance(names, str) or len(names) < 1:
        raise CellDefinitionError(f"{where}: give the loop's cell names, the last one converging")
    found = []
    for cell_name in names:
        cell = project.cells.get(cell_name)
        if cell is None:
            raise UnknownCellError(
                f"{where}: project {project.name!r} has no cell {cell_name!r}; its cells: "
                f"{', '.join(sorted(project.cells)) or '(none)'} (define them before the unit)"
            )
        found.append(cell)
    return found


def _check_loop(cells: list[type[Cell]], where: str) -> None:
    """The cells' req_cells among themselves reach every one from every one (a loop), and
    some edge among them is a stepping ITER edge (what advances the round)."""
    members = set(cells)
    edges: dict[type[Cell], set[type[Cell]]] = {cell: set() for cell in cells}
    stepping = False
    for cell in cells:
        for req in cell.req_cells.values():
            target = resolve_cell(req.target, default_project=cell.project)
            if target in members:
                edges[cell].add(target)
                stepping = stepping or req.stepping
    for cell in cells:
        seen, stack = {cell}, [cell]
        while stack:
            for nxt in edges[stack.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append(nxt)
        if seen != members or not any(cell in edges[c] for c in cells):
            raise CellDefinitionError(
                f"{where}: the cells are not a loop ({cell.full_name} does not reach all of them "
                "and back through their req_cells)"
            )
    if not stepping:
        raise CellDefinitionError(
            f"{where}: no edge of the loop advances the round; one must be an ITER edge, e.g. "
            "Req('m_step', round=ITER(-1), switch=lambda s: s.round > 0)"
        )


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_")) or "Unit"


__all__ = ["RecursiveUnit", "loop_specs"]
