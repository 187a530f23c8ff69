"""Runtime-resolved edges: DYN / STUB children called from make(), RAND children drawn before it.

The static planner cannot see these children (their values exist only once the caller runs), so
they are resolved here, in the process computing the caller, exactly as a static child of the
same call would be (the call's project params and addressed specs travel on the edge), then
computed inline if missing and loaded. Each child is an ordinary memoized instance: a second
caller asking for the same values finds it stored. What was called is returned as JSON-able
records for the caller's provenance (`extra["runtime_calls"]`). The rounds of a recursive unit
also resolve with the unit's Specs on every loop cell (core/units.py `loop_specs`).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping
from typing import Any

from further_dagster.core.cell import Contributions
from further_dagster.core.graph import DefinitionGraph
from further_dagster.core.instances import CallContext, DynamicEdge, Instance, Resolver
from further_dagster.core.params import RAND
from further_dagster.core.project import Project, generation
from further_dagster.core.units import loop_specs
from further_dagster.errors import DynamicCallError
from further_dagster.store import Store

log = logging.getLogger("further")

_GRAPHS: dict[str, tuple[int, DefinitionGraph]] = {}
_GRAPHS_LOCK = threading.Lock()


def _graph(project: Project) -> DefinitionGraph:
    """The definition graph of `project`, built once per definition generation."""
    with _GRAPHS_LOCK:
        found = _GRAPHS.get(project.name)
        if found is None or found[0] != generation() or project not in found[1].projects.values():
            found = (generation(), DefinitionGraph([project]))
            _GRAPHS[project.name] = found
        return found[1]


class RuntimeCalls:
    """The DYN/STUB/RAND children of one computing instance (`Cell.call` lands here)."""

    def __init__(self, store: Store, inst: Instance) -> None:
        self.store = store
        self.inst = inst
        self.records: list[dict[str, Any]] = []
        self._resolvers: dict[str, Resolver] = {}
        self._count = 0

    def __call__(self, edge: str, values: Mapping[str, Any]) -> Contributions:
        """`self.call(edge, **values)` inside the caller's make()."""
        inst = self.inst
        found = inst.dynamic.get(edge)
        if found is None or found.kind == "RAND":
            runtime = sorted(e for e, d in inst.dynamic.items() if d.kind != "RAND")
            static = sorted(set(inst.cell.req_cells) - set(inst.dynamic))
            why = (
                "a RAND edge is drawn before make(): read self.inputs[edge]"
                if found is not None
                else f"it has no DYN/STUB edge {edge!r}"
            )
            raise DynamicCallError(
                f"{inst.cell.full_name}.make() called self.call({edge!r}): {why}. Its DYN/STUB "
                f"edges: {', '.join(runtime) or '(none)'}; static edges (read them as "
                f"self.inputs[edge]): {', '.join(static) or '(none)'}."
            )
        missing = sorted(
            k for k, v in found.runtime.items() if not isinstance(v, RAND) and k not in values
        )
        if missing:
            raise DynamicCallError(
                f"{inst.cell.full_name}.make(): self.call({edge!r}) needs the value(s) the edge "
                f"leaves to the caller: {missing}; write self.call({edge!r}, "
                + ", ".join(f"{k}=..." for k in missing)
                + ")"
            )
        return self._child(found, dict(values))

    def draw_inputs(self) -> dict[str, Contributions]:
        """The children of every RAND-only edge, drawn now (before make() runs)."""
        return {
            edge: self._child(d, {}) for edge, d in self.inst.dynamic.items() if d.kind == "RAND"
        }

    def uncalled(self) -> list[str]:
        """DYN/STUB edges make() never called (reported, not an error)."""
        called = {r["edge"] for r in self.records}
        return sorted(
            e for e, d in self.inst.dynamic.items() if d.kind != "RAND" and e not in called
        )

    def _child(self, edge: DynamicEdge, values: dict[str, Any]) -> Contributions:
        from further_dagster.engine.compute import load
        from further_dagster.engine.increments import StoredIncrements
        from further_dagster.engine.modes import Mode
        from further_dagster.engine.plan import plan_for
        from further_dagster.engine.releases import ReleaseResolver
        from further_dagster.engine.scheduler import run_missing

        drawn: dict[str, Any] = {}
        for name, marker in edge.runtime.items():
            if isinstance(marker, RAND) and name not in values:
                self._count += 1
                drawn[name] = marker.draw(f"{self.inst.key}:{edge.edge}:{self._count}")
        child_values = {**edge.static, **drawn, **values}
        resolver = self._resolvers.get(edge.edge)
        if resolver is None:
            context = CallContext(
                params=edge.params,
                specs=loop_specs(self.inst.cell, self.inst.specs, edge.specs),
                release_resolver=ReleaseResolver(self.store),
                increment_counter=StoredIncrements(self.store),
            )
            resolver = Resolver(_graph(edge.target.project), context)
            self._resolvers[edge.edge] = resolver
        child = resolver.instance(edge.target, child_values, as_edge=True)
        plan = plan_for(self.store, [child])
        if plan.missing:
            run_missing(self.store, plan.missing, mode=Mode.INLINE)
        result = load(self.store, child, reader=self.inst.cell.project.name)
        self.records.append(
            {
                "edge": edge.edge,
                "kind": edge.kind,
                "cell": edge.target.full_name,
                "key": child.key,
                "values": _jsonable(child_values),
                "drawn": _jsonable(drawn),
                "computed": bool(plan.missing),
            }
        )
        return result


def _jsonable(values: Mapping[str, Any]) -> Any:
    """`values` as JSON (repr for what JSON cannot hold), for the provenance record."""
    result: Any = json.loads(json.dumps(dict(values), default=repr))
    return result
