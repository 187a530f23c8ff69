"""Edge plans: what a cell's req_cells ask for, the instance being resolved, its runtime edges.

A cell's plan is built once per cell and resolver; a cell with a call switch or an ITER edge
(core/iterative.py) gets one per instance instead, as its edges then depend on its Specs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from further_dagster.core.addressing import AddressNode
from further_dagster.core.cell import Cell
from further_dagster.core.hashing import digest, encode, plain_token
from further_dagster.core.iterative import Increments, edge_values, switch_on
from further_dagster.core.params import Opts, Specs, expand
from further_dagster.core.scopes import Scope

if TYPE_CHECKING:
    from further_dagster.core.instances import CallContext, Instance


@dataclass(frozen=True, slots=True)
class DynamicEdge:
    """A req_cells edge resolved when its caller runs (DYN, STUB or RAND values).

    `static` are the edge's values known at definition time, `runtime` the fields left to the
    caller (DYN/STUB) or drawn (RAND), and `params` / `specs` the call's project params (as the
    target's project sees them) and session-addressed specs, so the child resolves as a static
    child of the same call would.
    """

    edge: str
    kind: str
    target: type[Cell]
    static: Mapping[str, Any]
    runtime: Mapping[str, Any]
    params: Mapping[str, Mapping[str, Any]]
    specs: Mapping[str, Mapping[str, Any]]


CacheKey = tuple[type[Cell], bytes, tuple[int, ...]]
"""(cell, encoded values and root opts, the session combination's tag of the cell)."""

NO_TAG: tuple[int, ...] = ()


class EdgePlan:
    """What a cell's req_cells ask for, in declaration order; built once per cell and resolver.

    `shape` gives, per edge, None (one dependency) or the number of swept combinations;
    `targets[i]` and `values[i]` are the i-th dependency those expand to, and `keys[i]` its
    cache key. Parallel lists rather than one object per dependency: a sweep of 100,000 points
    would otherwise add 100,000 objects for the garbage collector to traverse.
    """

    __slots__ = (
        "shape",
        "targets",
        "values",
        "keys",
        "edges",
        "dynamic",
        "conditional",
        "steps",
        "instructions",
    )

    def __init__(
        self, cell: type[Cell], targets: Mapping[str, type[Cell]], specs: Specs | None = None
    ) -> None:
        self.shape: list[tuple[str, int | None]] = []
        self.targets: list[type[Cell]] = []
        self.values: list[Mapping[str, Any]] = []
        self.edges: list[str] = []
        self.dynamic: list[tuple[str, str, type[Cell], dict[str, Any], dict[str, Any]]] = []
        # Per dependency, only when some edge needs it: the ITER fields of its edge, and the
        # Increments instruction it gives an IncrementingCell.
        self.steps: list[tuple[str, ...]] | None = None
        self.instructions: list[Increments | None] | None = None
        # A switch or ITER edge makes the plan depend on the caller's Specs: the cell's shared
        # plan then only says so, and each instance builds its own (`specs` given).
        self.conditional = specs is None and any(r.conditional for r in cell.req_cells.values())
        self.keys: list[CacheKey | None] = []
        if self.conditional:
            return
        for edge, req in cell.req_cells.items():
            target = targets[edge]
            if req.conditional:
                assert specs is not None
                if not switch_on(req, cell, edge, specs):
                    continue  # switched off: no dependency, and self.inputs[edge] is None
                values = edge_values(req, specs)
            else:
                values = req.values
            before = len(self.targets)
            if req.kind is not None:
                static = req.static_values
                runtime = {k: v for k, v in req.values.items() if k not in static}
                self.dynamic.append((edge, req.kind, target, static, runtime))
            elif req.swept:
                combos = expand(values)
                self.shape.append((edge, len(combos)))
                self.targets.extend([target] * len(combos))
                self.values.extend(combos)
                self.edges.extend([edge] * len(combos))
            else:
                self.shape.append((edge, None))
                self.targets.append(target)
                self.values.append(values)
                self.edges.append(edge)
            if req.iter_fields or req.increments is not None or self.steps is not None:
                self._mark(before, req.iter_fields if req.stepping else (), req.increments)
        # Encoded only when first visited, as the recursive resolver did, so an edge value
        # that cannot be encoded fails after the edges before it were resolved.
        self.keys = [None] * len(self.targets)

    def _mark(self, before: int, fields: tuple[str, ...], instruction: Increments | None) -> None:
        """Record the ITER fields and instruction of the dependencies from `before` on."""
        if self.steps is None:
            self.steps = [()] * before
            self.instructions = [None] * before
        assert self.instructions is not None
        count = len(self.targets) - before
        self.steps.extend([fields] * count)
        self.instructions.extend([instruction] * count)


class Pending:
    """An instance being resolved: Specs and Opts known, dependencies resolved so far.

    `plain`: resolved in its project's default scope and on no addressed path, so its edges'
    cache keys are the same wherever it is reached (and are kept in its cell's edge plan).
    """

    __slots__ = (
        "cell",
        "cache_key",
        "specs",
        "opts",
        "plan",
        "resolved",
        "scope",
        "node",
        "plain",
        "unroll",
        "increments",
        "transformed",
    )

    def __init__(
        self,
        cell: type[Cell],
        cache_key: CacheKey,
        specs: Specs,
        opts: Opts,
        plan: EdgePlan,
        scope: Scope,
        node: AddressNode | None,
        unroll: int,
        increments: Increments | None,
        transformed: tuple[dict[str, Any], ...] = (),
    ) -> None:
        self.cell = cell
        self.cache_key = cache_key
        self.specs = specs
        self.opts = opts
        self.plan = plan
        self.resolved: list[Instance] = []
        self.scope = scope
        self.node = node
        self.plain = not scope.token and node is None
        self.unroll = unroll  # ITER steps on the path from the called cell
        self.increments = increments
        self.transformed = transformed  # records of the transformers that set its Specs


_EMPTY = encode({})


def make_cache_key(
    cell: type[Cell],
    values: Mapping[str, Any],
    root_opts: Mapping[str, Any] | None,
    tag: tuple[int, ...] = NO_TAG,
    where: bytes = b"",
    token: bytes | None = None,
) -> CacheKey:
    """`where`: the scope and address tokens (and the root marker) of the place resolved.

    Plain values are written as their `plain_token`, about three times cheaper than `encode`
    (no sorting) and never equal to an encoding ("d{" against "d<count>{"): equal values given
    in another order then only miss a share, as the logic key still finds the instance.
    `token`: `plain_token(values)` when the caller has it."""
    if values or root_opts:
        if token is None and type(values) is dict:
            token = plain_token(values)
        if token is None:
            token = encode(dict(values))
        encoded = token + (encode(dict(root_opts)) if root_opts else _EMPTY)
        return (cell, encoded + where, tag)
    return (cell, where, tag)


def dynamic_edges(
    pending: Pending, context: CallContext, cross: Callable[[Scope, type[Cell], str], Scope]
) -> tuple[dict[str, DynamicEdge] | None, dict[str, str] | None]:
    """The runtime edges of `pending`, and what of them enters its key: the target, its
    logic_version, the static values and the target project's params of this call (`cross`:
    the resolver's scope of a called project)."""
    if not pending.plan.dynamic:
        return None, None
    dynamic: dict[str, DynamicEdge] = {}
    descriptors: dict[str, str] = {}
    for edge, kind, target, static, runtime in pending.plan.dynamic:
        scope = pending.scope
        if target.project is not pending.cell.project:
            scope = cross(scope, pending.cell, target.project.address)
        params = {name: dict(v) for name, v in context.params.items()}
        params[scope.project] = dict(scope.params)
        specs = {name: dict(v) for name, v in context.specs.items()}
        for name, values in scope.cell_specs.items():
            full = f"{scope.project}.{name}"
            specs[full] = {**values, **specs.get(full, {})}
        dynamic[edge] = DynamicEdge(edge, kind, target, static, runtime, params, specs)
        descriptors[edge] = "runtime:" + digest(
            [target.full_name, str(target.logic_version), static, dict(scope.params)]
        )
    return dynamic, descriptors


__all__ = [
    "NO_TAG",
    "CacheKey",
    "DynamicEdge",
    "EdgePlan",
    "Pending",
    "dynamic_edges",
    "make_cache_key",
]
