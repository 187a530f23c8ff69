"""Addressing: values a call injects at named places of the graph it reaches.

Two spellings, both session-level (above every edge value and project param of the call):

- per cell, `specs={"project.cell": {...}}` / `opts={...}`: every instance of that cell the call
  reaches;
- per path, `addressed={"fits/data": {"n_samples": 50}}`: the instance reached from the called
  cell through the req_cells edges `fits` then `data` (names joined by "/"). A swept edge on
  the path addresses every one of its combinations; the same cell reached by another path is
  not touched.

A cell name or a path that the call does not reach is an `AddressError` listing what it could be.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from further_dagster.core.params import VAR, plain, runtime_kind
from further_dagster.errors import AddressError

if TYPE_CHECKING:
    from further_dagster.core.cell import Cell
    from further_dagster.core.graph import DefinitionGraph


class AddressNode:
    """One step of the addressed paths: the values set at this place, and the paths below.

    `token` tells instances resolved at this place apart from the same cell elsewhere (it is
    part of the resolver's cache key, never of a logic key: keys follow from the values).
    """

    __slots__ = ("path", "children", "values", "token")

    def __init__(self, path: str) -> None:
        self.path = path
        self.children: dict[str, AddressNode] = {}
        self.values: dict[str, Any] | None = None
        self.token = b"@" + path.encode()


def static_edges(graph: DefinitionGraph, cell: type[Cell]) -> dict[str, type[Cell]]:
    """The edges of `cell` resolved before anything runs (not DYN/STUB/RAND), by name."""
    return {
        edge: target
        for edge, target in graph.targets[cell].items()
        if cell.req_cells[edge].kind is None
    }


def address_tree(
    graph: DefinitionGraph, root: type[Cell], addressed: Mapping[str, Any] | None
) -> AddressNode | None:
    """The checked tree of `addressed` paths from `root` (None when there are none).

    Raises:
        AddressError: a path names an edge its cell lacks (the message lists the edges), or its
            values a field the cell at its end lacks, or a VAR/runtime kind.
    """
    if not addressed:
        return None
    tree = AddressNode("")
    for path, values in addressed.items():
        if not isinstance(path, str) or not path.strip("/"):
            raise AddressError(
                f"addressed path {path!r}: write req_cells edge names from "
                f"{root.full_name} joined by '/', e.g. 'fits/data'"
            )
        if not isinstance(values, Mapping):
            raise AddressError(
                f"addressed[{path!r}] is {values!r}; give a dict of Specs values, e.g. "
                "{'n_samples': 50}"
            )
        cell, node = root, tree
        walked: list[str] = []
        for segment in path.strip("/").split("/"):
            edges = static_edges(graph, cell)
            if segment not in edges:
                where = "/".join(walked) or "the called cell"
                raise AddressError(
                    f"addressed path {path!r}: {cell.full_name} (at {where}) has no edge "
                    f"{segment!r}; its edges: {', '.join(sorted(edges)) or '(none)'}. A path "
                    f"is the req_cells edge names from {root.full_name}, joined by '/'."
                )
            walked.append(segment)
            cell = edges[segment]
            node = node.children.setdefault(segment, AddressNode("/".join(walked)))
        fields = cell.Specs.model_fields
        unknown = sorted(set(values) - set(fields))
        if unknown:
            raise AddressError(
                f"addressed[{path!r}] sets {unknown} on {cell.full_name}, whose Specs have no "
                f"such field; valid fields: {', '.join(sorted(fields)) or '(none)'}"
            )
        for name, value in values.items():
            if isinstance(value, VAR) or runtime_kind(value) is not None:
                raise AddressError(
                    f"addressed[{path!r}][{name!r}] = {value!r}: addressed values are plain "
                    "values; sweep with a VAR in specs= or on the call instead"
                )
        node.values = {**(node.values or {}), **{k: plain(v) for k, v in values.items()}}
    return tree


def reachable(graph: DefinitionGraph, root: type[Cell]) -> list[type[Cell]]:
    """Every cell the call of `root` can reach (itself included), through any edge."""
    seen = {root}
    order = [root]
    stack = [root]
    while stack:
        for target in graph.targets[stack.pop()].values():
            if target not in seen:
                seen.add(target)
                order.append(target)
                stack.append(target)
    return order


def check_cell_names(
    graph: DefinitionGraph, root: type[Cell], given: Mapping[str, Any] | None, what: str
) -> None:
    """Every "project.cell" of a call's `specs=` / `opts=` is a cell the call reaches.

    Raises:
        AddressError: a name matches no reachable cell; the message lists the valid ones.
            (A field the cell lacks is a SpecsValidationError when the instance is resolved.)
    """
    if not given:
        return
    cells = reachable(graph, root)
    names = {c.full_name for c in cells}
    for name in given:
        if name not in names:
            raise AddressError(
                f"{what}={{{name!r}: ...}}: the call of {root.full_name} reaches no cell "
                f"{name!r}; it reaches: {', '.join(sorted(names))}. Write 'project.cell'."
            )
