"""The session-level expansion of one call: every VAR (and QUERY) of its values, params and
addressed specs as a Cartesian product with each combination's cell tags, and the session-level
RAND draws."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from typing import Any

from further_dagster.core.cell import Cell
from further_dagster.core.graph import DefinitionGraph
from further_dagster.core.params import RAND, VAR, plain, runtime_kind
from further_dagster.errors import ParameterKindError

_Entry = tuple[str, Any, Any, Any]  # (kind, group, name or _WHOLE, value), in call order
# (position, root values, params, specs, tags) of one combination
_Combo = tuple[
    int, dict[str, Any], dict[str, Any], dict[str, Any], dict[type[Cell], tuple[int, ...]]
]
_WHOLE = object()


class SessionSweep:
    """The Cartesian product over every VAR in root values, params and addressed specs (the
    first VAR varies slowest), expanded once, with each combination's cell tags for a shared
    `Resolver`: a cell's tag holds the option indices of the VARs that can change it (its
    own addressed specs, a subscribed project's params, the same for every cell upstream)."""

    def __init__(
        self,
        graph: DefinitionGraph,
        target: type[Cell],
        values: Mapping[str, Any],
        params: Mapping[str, Any],
        specs: Mapping[str, Any],
    ) -> None:
        entries: list[_Entry] = [("values", None, name, v) for name, v in values.items()]
        for kind, groups in (("params", params), ("specs", specs)):
            for group, value in groups.items():
                if isinstance(value, Mapping):
                    entries.extend((kind, group, name, v) for name, v in value.items())
                else:
                    entries.append((kind, group, _WHOLE, value))
        self.entries = entries
        self.swept = [i for i, e in enumerate(entries) if isinstance(e[3], VAR)]
        self.tagged = self._tag_plan(graph, target) if self.swept else {}

    def _tag_plan(self, graph: DefinitionGraph, target: type[Cell]) -> dict[type[Cell], list[int]]:
        """cell -> positions (in `self.swept`) of the VARs that can change its instances."""
        reachable: list[type[Cell]] = []
        seen = {target}
        stack = [target]
        dependents: dict[type[Cell], list[type[Cell]]] = {}
        while stack:
            cell = stack.pop()
            reachable.append(cell)
            for dep in graph.targets[cell].values():
                dependents.setdefault(dep, []).append(cell)
                if dep not in seen:
                    seen.add(dep)
                    stack.append(dep)
        tagged: dict[type[Cell], list[int]] = {}
        for position, at in enumerate(self.swept):
            kind, group, _, _ = self.entries[at]
            if kind == "values":
                continue  # root values are part of the root's cache key already
            if kind == "specs":
                sources = [c for c in reachable if c.full_name == group]
            else:
                projects = _translated_from(graph, group)
                sources = [
                    c
                    for c in reachable
                    if (c.project.name in projects or c.project.address in projects)
                    and c.project_params
                ]
            affected = set(sources)
            pending = list(sources)
            while pending:
                for dependent in dependents.get(pending.pop(), ()):
                    if dependent not in affected:
                        affected.add(dependent)
                        pending.append(dependent)
            for cell in affected:
                tagged.setdefault(cell, []).append(position)
        return tagged

    def combos(self) -> tuple[int, Iterator[_Combo]]:
        """How many combinations there are, and (position, root values, params, specs, tags)
        of each. Every VAR's values are read here, once (a QUERY's run its query). `position` is
        its place in expansion order (the first VAR varies slowest), which is the order of a
        call's results; the combinations themselves come with the root values' VARs varying
        fastest, so that a run of them shares one params/specs/tags context: a grid swept on
        its root values and on upstream specs would otherwise change context every time.

        A group (the root values, the params, the specs) or the tags that did not change from
        one combination to the next is the same dict object, so a resolver can tell cheaply
        that its context did not change (`is`) and keep what it derived from it."""
        options = [self.entries[at][3].values for at in self.swept]
        total = 1
        for values in options:
            total *= len(values)
        return total, self._combos(options)

    def _combos(self, options: list[Any]) -> Iterator[_Combo]:
        entries, swept, tagged = self.entries, self.swept, self.tagged
        # per group, the positions (in `swept`) of its VARs; the positions any tag reads
        positions = {
            kind: [p for p, at in enumerate(swept) if entries[at][0] == kind] for kind in _GROUPS
        }
        read = sorted({p for ps in tagged.values() for p in ps})
        strides = [1] * len(swept)
        for p in range(len(swept) - 2, -1, -1):
            strides[p] = strides[p + 1] * len(options[p + 1])
        # the root values of every combination of their VARs, built once and shared by every
        # context, each with its share of the position
        inner: list[tuple[dict[str, Any], int]] = []
        for indices in self._picks(options, positions["values"]):
            offset = sum([indices[p] * strides[p] for p in positions["values"]])
            inner.append((self._group("values", options, indices), offset))
        others = [p for p in range(len(swept)) if p not in positions["values"]]
        last: dict[str, tuple[tuple[int, ...], dict[str, Any]]] = {}
        last_tags: tuple[tuple[int, ...], dict[type[Cell], tuple[int, ...]]] | None = None
        for indices in self._picks(options, others):
            out: list[dict[str, Any]] = []
            for kind in _GROUPS[1:]:
                mine = tuple([indices[p] for p in positions[kind]])
                found = last.get(kind)
                if found is None or found[0] != mine:
                    found = last[kind] = (mine, self._group(kind, options, indices))
                out.append(found[1])
            now = tuple([indices[p] for p in read])
            if last_tags is None or last_tags[0] != now:
                tags = {cell: tuple([indices[p] for p in ps]) for cell, ps in tagged.items()}
                last_tags = (now, tags)
            base = sum([indices[p] * strides[p] for p in others])
            params, specs, tags = out[0], out[1], last_tags[1]
            for values, offset in inner:
                yield base + offset, values, params, specs, tags

    @staticmethod
    def _picks(options: list[list[Any]], varied: list[int]) -> Iterator[list[int]]:
        """Option indices of every VAR (0 for those not `varied`), `varied` in product order."""
        for picked in itertools.product(*(range(len(options[p])) for p in varied)):
            indices = [0] * len(options)
            for p, i in zip(varied, picked, strict=True):
                indices[p] = i
            yield indices

    def _group(self, kind: str, options: list[list[Any]], indices: list[int]) -> Any:
        """The values of one group (`kind`) in the combination `indices`."""
        out: dict[str, Any] = {}
        at_var = 0
        for kind_at, group, name, value in self.entries:
            if isinstance(value, VAR):
                value = options[at_var][indices[at_var]]
                at_var += 1
            if kind_at != kind:
                continue
            if kind == "values" or name is _WHOLE:
                out[name if kind == "values" else group] = value
            else:
                out.setdefault(group, {})[name] = value
        return out


_GROUPS = ("values", "params", "specs")


def _translated_from(graph: DefinitionGraph, project: str) -> set[str]:
    """`project` and every project whose params a translation takes from it, transitively."""
    found = {project}
    grew = True
    while grew:
        grew = False
        for caller in graph.projects.values():
            if caller.name not in found and caller.address not in found:  # lib, lib@1.4
                continue
            for called, decl in caller.calls.items():
                if decl.translations and called not in found:
                    found.add(called)
                    grew = True
    return found


def drawn(
    values: dict[str, Any],
    params: Mapping[str, Any] | None,
    project_params: Mapping[str, Mapping[str, Any]] | None,
    specs: Mapping[str, Mapping[str, Any]] | None,
) -> tuple[
    dict[str, Any],
    Mapping[str, Any] | None,
    Mapping[str, Mapping[str, Any]] | None,
    Mapping[str, Mapping[str, Any]] | None,
]:
    """Session-level values with CONST unwrapped and every RAND drawn (anew per call).

    Raises:
        ParameterKindError: DYN or STUB at a session call (they belong on req_cells edges).
    """

    def one(where: str, value: Any) -> Any:
        kind = runtime_kind(value)
        if kind in ("DYN", "STUB"):
            raise ParameterKindError(
                f"{where}={kind}: {kind} marks a req_cells edge whose value the calling cell "
                "computes in make(); at a session call give the value (or a VAR/RAND)"
            )
        return value.draw() if isinstance(value, RAND) else plain(value)

    def group(where: str, given: Mapping[str, Any] | None) -> Any:
        if not given:
            return given
        return {
            name: (
                {k: one(f"{where}[{name!r}][{k!r}]", v) for k, v in value.items()}
                if isinstance(value, Mapping)
                else one(f"{where}[{name!r}]", value)
            )
            for name, value in given.items()
        }

    values = {name: one(name, value) for name, value in values.items()}
    return (
        values,
        group("params", params),
        group("project_params", project_params),
        group("specs", specs),
    )
