"""Instances: cells with every parameter resolved (the Instance Tree), keyed by `keys.logic_key`.

Resolution order for one instance's Specs, later wins (session > project > cell):
    1. Specs defaults
    2. subscribed project params' defaults
    3. the caller's req_cells edge values
    4. project params set for this call: the session's `params=` / `project_params=`, a selected
       label's `project_specs`, a translation from the calling project, a label routed by a
       called assignment (in that order, later wins)
    5. a selected label's `cell_specs` (of the root project, or routed to a called project)
    6. session-addressed values: `specs={"project.cell": {...}}`, then `addressed={"a/b": {...}}`
    7. the root call's own values
A key depends only on Specs, releases and upstream keys, never on upstream values, so every key of
a plan is known before anything runs. DYN/STUB/RAND edges are the exception the seed allows: they
are resolved when their caller runs (engine/dynamic.py), and the caller's key covers the edge's
target, its logic_version and its static values, not the runtime values.

Iterative edges (core/iterative.py): a cell with a switch or ITER edge gets its edge plan per
instance, and an ITER loop unrolls on the same stack (at most `FURTHER_MAX_UNROLL` steps on a
path); an IncrementingCell resolves to the increment its instruction names (counted against the
store by `CallContext.increment_counter`); a call's transformers reshape Specs at their paths.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from further_dagster import settings
from further_dagster.core.addressing import AddressNode
from further_dagster.core.cell import Cell
from further_dagster.core.edges import (
    NO_TAG,
    CacheKey,
    DynamicEdge,
    EdgePlan,
    Pending,
    dynamic_edges,
    make_cache_key,
)
from further_dagster.core.graph import DefinitionGraph
from further_dagster.core.hashing import encode, plain_token
from further_dagster.core.instance import Instance, walk
from further_dagster.core.iterative import (
    PREVIOUS_EDGE,
    IncrementCounter,
    Increments,
    Transformer,
    increment_key,
    stuck,
    transform,
    unroll_limit,
)
from further_dagster.core.keys import STRUCTURAL_RELEASE, logic_key
from further_dagster.core.params import VAR, ProjectParams, Specs, build_model
from further_dagster.core.scopes import Scope
from further_dagster.core.validated import Validated, defaults
from further_dagster.errors import IncrementsError

ReleaseLookup = Callable[[type[Cell], Specs], str]
"""`lookup(cell, specs) -> release` of a resource instance (the engine's ReleaseResolver is one)."""


@dataclass
class CallContext:
    """The session-level instructions of one call, with every VAR already expanded."""

    params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # project -> values
    specs: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # "p.cell" -> values
    opts: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # "p.cell" -> values
    release_resolver: ReleaseLookup | None = None
    # project -> calling cell name -> {called project: label}: the selected labels' called
    # assignments (core/inits.py)
    assignments: Mapping[str, Mapping[str, Mapping[str, str]]] = field(default_factory=dict)
    addressed: AddressNode | None = None  # core/addressing.py address_tree
    # How many increments of an IncrementingCell's base instance are stored (core/iterative.py);
    # None: none are (a context that never computes, e.g. a definitions build).
    increment_counter: IncrementCounter | None = None
    transformers: Mapping[str, Transformer] = field(default_factory=dict)  # path -> transformer


class Resolver:
    """Turns (cell, values) into Instances within one CallContext, sharing equal sub-instances.

    Resolution walks the dependency graph depth first, each edge in declaration order, with an
    explicit stack rather than recursion, so a chain of any length resolves without touching
    the interpreter's recursion limit. Instances are cached by (cell, encoded values, place)
    and shared by logic key.

    One resolver may serve several contexts in turn (`use`: the combinations of a session-level
    sweep), sharing every instance that the contexts agree on: the caller tags each cell with
    what of the context can change it (itself or anything upstream), and the tag is part of
    the cache key.
    """

    def __init__(self, graph: DefinitionGraph, context: CallContext | None = None) -> None:
        self.graph = graph
        self.context = context or CallContext()
        self._tags: Mapping[type[Cell], tuple[int, ...]] = {}
        self._cache: dict[CacheKey, Instance] = {}
        self._by_key: dict[str, Instance] = {}
        self._plans: dict[type[Cell], EdgePlan] = {}
        self._defaults: dict[str, ProjectParams] = {}
        self._counts: dict[str, int] = {}  # base key -> stored increments, asked once
        self._validated = Validated()
        self._max_unroll = settings.max_unroll()
        self._reset_scopes()

    def _reset_scopes(self) -> None:
        self._scopes: dict[str, Scope] = {}
        self._crossings: dict[tuple[int, str, str], Scope] = {}
        self._interned: dict[bytes, Scope] = {}

    def use(self, context: CallContext, tags: Mapping[type[Cell], tuple[int, ...]]) -> None:
        """Resolve in `context` from now on. `tags[cell]` must differ between two contexts
        whenever they could resolve `cell` differently (its addressed Specs or Opts, its
        project's params, or those of any cell upstream); an untagged cell is the same in
        every context this resolver serves."""
        # scopes derive from the call's params and assignments alone: a sweep that shares
        # them between its combinations (engine/sweep.py) keeps its scopes
        same = context.params is self.context.params
        if not same or context.assignments is not self.context.assignments:
            self._reset_scopes()
        self.context = context
        self._tags = tags

    def resolved(self) -> list[Instance]:
        """Every instance resolved so far, dependencies first: `walk` of the roots asked for,
        in the same order (resolution closes each instance after its dependencies)."""
        return list(self._by_key.values())

    def project_params(self, project_name: str) -> ProjectParams:
        """The validated project params of `project_name` in this call context."""
        return self._all_params(self._scope(project_name))

    def instance(
        self,
        cell: type[Cell],
        values: Mapping[str, Any] | None = None,
        *,
        root_opts: Mapping[str, Any] | None = None,
        as_edge: bool = False,
        increments: Increments | None = None,
    ) -> Instance:
        """The instance of `cell` given the call's (or, `as_edge`, an edge's) `values`; no VAR
        allowed here. A call's values win over everything; an edge's rank as edge values.
        `increments`: the instruction for an IncrementingCell `cell` (default: its own).

        Raises:
            SpecsValidationError: Specs, Opts or project params of some instance are invalid.
            IncrementsError / SwitchError / UnrollLimitError: core/iterative.py.
        """
        values = values or {}
        tags = self._tags
        node = None if as_edge else self.context.addressed
        where = b"" if as_edge else b"^" + (node.token if node is not None else b"")
        if increments is not None:
            if not cell.is_incrementing:
                raise IncrementsError(
                    f"increments={increments!r} for {cell.full_name}, which is not an "
                    "IncrementingCell; drop increments="
                )
            where += increments.token
        # a call's values are often all its instance's Specs: their token serves both
        token = plain_token(values) if values and type(values) is dict else None
        cache_key = make_cache_key(cell, values, root_opts, tags.get(cell, NO_TAG), where, token)
        cache = self._cache
        found = cache.get(cache_key)
        if found is not None:
            return found
        scope = self._scope(cell.project.address)
        root = not as_edge
        stack = [
            self._open(cell, cache_key, values, root_opts, scope, node, root, 0, increments, token)
        ]
        while True:
            top = stack[-1]
            plan = top.plan
            keys = plan.keys
            resolved = top.resolved
            at = len(resolved)
            child: tuple[Scope, AddressNode | None] | None = None
            while at < len(keys):
                key = keys[at] if top.plain else None
                child = None
                if key is None and top.plain and plan.instructions is None:
                    target = plan.targets[at]
                    if target.project is top.cell.project:  # no `_child` to work out
                        child = (top.scope, None)
                        tag = tags.get(target, NO_TAG)
                        key = make_cache_key(target, plan.values[at], None, tag)
                        if target not in tags:
                            keys[at] = key
                if key is None:
                    target = plan.targets[at]
                    child = self._child(top, at)
                    scope, node = child
                    place = scope.token + (node.token if node is not None else b"")
                    tag = tags.get(target, NO_TAG)
                    instructions = plan.instructions
                    told = instructions[at] if instructions is not None else None
                    extra = told.token if told is not None else b""
                    key = make_cache_key(target, plan.values[at], None, tag, place + extra)
                    if top.plain and not place and target not in tags:
                        keys[at] = key  # the same in every context: keep it
                found = cache.get(key)
                if found is None:
                    break
                resolved.append(found)
                at += 1
            else:
                stack.pop()
                inst = self._close(top)
                if not stack:
                    return inst
                stack[-1].resolved.append(inst)
                continue
            if child is None:
                child = self._child(top, at)
            if plan.steps is None:
                target, values = plan.targets[at], plan.values[at]
                stack.append(self._open(target, key, values, None, *child, False, top.unroll, None))
            else:
                stack.append(self._open_step(top, at, key, child))

    def _open_step(
        self, top: Pending, at: int, key: CacheKey, child: tuple[Scope, AddressNode | None]
    ) -> Pending:
        """Open `top`'s `at`-th dependency, counting ITER steps and checking that one advanced."""
        plan = top.plan
        assert plan.steps is not None and plan.instructions is not None
        fields = plan.steps[at]
        unroll = top.unroll + 1 if fields else top.unroll
        target, values = plan.targets[at], plan.values[at]
        if unroll > self._max_unroll:
            raise unroll_limit(target, top.cell, plan.edges[at], self._max_unroll, fields, values)
        pending = self._open(
            target, key, values, None, *child, False, unroll, plan.instructions[at]
        )
        for name in fields:
            if getattr(pending.specs, name) != values[name]:
                raise stuck(top.cell, plan.edges[at], target, name, values, pending.specs)
        return pending

    # --- scopes -----------------------------------------------------------------------------

    def _scope(self, project: str) -> Scope:
        """The default scope of `project` in this context."""
        found = self._scopes.get(project)
        if found is None:
            context = self.context
            found = Scope(
                project,
                context.params.get(project, {}),
                {},
                {},
                context.assignments.get(project, {}),
                b"",
            )
            self._scopes[project] = found
        return found

    def _child(self, top: Pending, at: int) -> tuple[Scope, AddressNode | None]:
        """The scope and address node of `top`'s `at`-th dependency."""
        plan = top.plan
        target = plan.targets[at]
        scope = top.scope
        if target.project is not top.cell.project:
            scope = self._cross(scope, top.cell, target.project.address)
        node = top.node.children.get(plan.edges[at]) if top.node is not None else None
        return scope, node

    def _cross(self, scope: Scope, caller: type[Cell], project: str) -> Scope:
        """The scope of `project`'s cells when `caller` (in `scope`) requires one of them:
        the label a called assignment routes to it, and the caller's translated params."""
        slot = (id(scope), caller.name, project)
        found = self._crossings.get(slot)
        if found is not None:
            return found
        name = self.graph.projects[project].name  # `project` is an address: lib@1.4
        decl = caller.project.calls.get(name)
        label = scope.assignments.get(caller.name, {}).get(name)
        translated: dict[str, Any] = {}
        if decl is not None and decl.translations:
            ours = self._all_params(scope)
            translated = {to: getattr(ours, source) for to, source in decl.translations.items()}
        if label is None and not translated:
            found = self._scope(project)
        else:
            called = self.graph.projects[project]
            selection = called.select_labels(label) if label is not None else None
            params = {
                **(selection.project_specs if selection else {}),
                **translated,
                **self.context.params.get(project, {}),
            }
            token = b"%" + encode([project, label, params])
            found = self._interned.get(token)
            if found is None:
                found = Scope(
                    project,
                    params,
                    selection.cell_specs if selection else {},
                    selection.opts if selection else {},
                    selection.called_assignments
                    if selection
                    else self.context.assignments.get(project, {}),
                    token,
                )
                self._interned[token] = found
        self._crossings[slot] = found
        return found

    def _set_params(self, scope: Scope) -> dict[str, Any]:
        """The project params `scope` sets for this call, validated (name -> value)."""
        found = scope._set
        if found is None:
            if scope.params:
                model = self._all_params(scope)
                found = {name: getattr(model, name) for name in scope.params}
            else:
                found = {}
            scope._set = found
        return found

    def _all_params(self, scope: Scope) -> ProjectParams:
        """Every project param of `scope` (defaults and what it sets), validated."""
        found = scope._all
        if found is None:
            project = self.graph.projects[scope.project]
            found = build_model(
                project.params,
                scope.params,
                where=f"project {scope.project!r}",
                what="project params",
            )
            scope._all = found
        return found

    def _param_defaults(self, project: str) -> ProjectParams:
        found = self._defaults.get(project)
        if found is None:
            found = self._defaults[project] = self._all_params(Scope(project, {}, {}, {}, {}, b""))
        return found

    # --- instances --------------------------------------------------------------------------

    def _open(
        self,
        cell: type[Cell],
        cache_key: CacheKey,
        values: Mapping[str, Any],
        root_opts: Mapping[str, Any] | None,
        scope: Scope,
        node: AddressNode | None,
        root: bool,
        unroll: int,
        increments: Increments | None,
        token: bytes | None = None,
    ) -> Pending:
        """Validate the Specs and Opts of a new instance (the order of the module docstring);
        its dependencies come next. `token`: `plain_token(values)`, if known."""
        merged: dict[str, Any] = {}
        subscribed = cell.project_params
        others = False  # did anything but `values` set a field?
        if subscribed:
            others = True
            param_defaults = self._param_defaults(cell.project.address)
            for name in subscribed:
                merged[name] = getattr(param_defaults, name)
        if values:
            merged.update(values)
        if subscribed and scope.params:
            given = self._set_params(scope)
            for name in subscribed:
                if name in given:
                    merged[name] = given[name]
        if scope.cell_specs:
            labelled = scope.cell_specs.get(cell.name)
            if labelled:
                merged.update(labelled)
                others = True
        addressed = self.context.specs.get(cell.full_name)
        if addressed:
            merged.update(addressed)
            others = True
        if node is not None and node.values:
            merged.update(node.values)
            others = True
        if root and values:
            merged.update(values)
        if others:
            token = None
        specs = self._validated.model(cell.Specs, cell.full_name, merged, "Specs", token)
        transformed: tuple[dict[str, Any], ...] = ()
        if node is not None and self.context.transformers:
            specs, transformed = transform(self.context.transformers, node.path, cell, specs)
        addressed_opts = self.context.opts.get(cell.full_name)
        labelled_opts = scope.opts.get(cell.name) if scope.opts else None
        if addressed_opts or root_opts or labelled_opts:
            opts_values = {**(labelled_opts or {}), **(addressed_opts or {}), **(root_opts or {})}
        else:
            opts_values = {}
        if opts_values:
            opts = self._validated.model(cell.Opts, cell.full_name, opts_values, "Opts")
        else:
            opts = defaults(cell.Opts, cell.full_name, opts_values, "Opts")
        plan = self._plans.get(cell)
        if plan is None:
            plan = self._plans[cell] = EdgePlan(cell, self.graph.targets[cell])
        if plan.conditional:
            plan = EdgePlan(cell, self.graph.targets[cell], specs)
        return Pending(
            cell, cache_key, specs, opts, plan, scope, node, unroll, increments, transformed
        )

    def _close(self, pending: Pending) -> Instance:
        """Every dependency is resolved: the release, the keys, the shared Instance."""
        cell, specs = pending.cell, pending.specs
        deps: dict[str, Instance | tuple[Instance, ...]] = {}
        resolved = pending.resolved
        at = 0
        for edge, count in pending.plan.shape:
            if count is None:
                deps[edge] = resolved[at]
                at += 1
            else:
                deps[edge] = tuple(resolved[at : at + count])
                at += count
        dynamic, descriptors = (
            dynamic_edges(pending, self.context, self._cross) if pending.plan.dynamic else _NONE
        )

        release = None
        if cell.is_resource:
            if self.context.release_resolver is None:
                raise RuntimeError(f"{cell.full_name} is a resource cell but no release resolver")
            release = self.context.release_resolver(cell, specs)
        encoded = self._validated.encoded(specs)
        key = logic_key(cell, specs, deps, release, dynamic=descriptors, encoded_specs=encoded)
        inst = (
            self._by_key.get(key)
            if not cell.is_incrementing
            else self._increment(pending, deps, key, descriptors, dynamic)
        )
        if inst is None:
            structural = release is None
            if structural:
                for dep in resolved:
                    if dep.skey != dep.key:
                        structural = False
                        break
            if structural:
                skey = key
            else:
                skey = logic_key(
                    cell,
                    specs,
                    deps,
                    STRUCTURAL_RELEASE if cell.is_resource else None,
                    structural=True,
                    dynamic=descriptors,
                    encoded_specs=encoded,
                )
            inst = Instance(
                cell,
                specs,
                pending.opts,
                deps,
                key,
                release,
                skey,
                _collect_releases(resolved, release, cell, key),
                dynamic or _NO_DYNAMIC,
                transformed=pending.transformed,
            )
            self._by_key[key] = inst
        self._cache[pending.cache_key] = inst
        return inst

    def _increment(
        self,
        pending: Pending,
        deps: dict[str, Instance | tuple[Instance, ...]],
        base: str,
        descriptors: dict[str, str] | None,
        dynamic: dict[str, DynamicEdge] | None,
    ) -> Instance:
        """The increment `pending`'s instruction names: one instance per increment from the last
        stored (or the first) on, each requiring the one before (the base is no instance)."""
        cell, specs = pending.cell, pending.specs
        counter = self.context.increment_counter
        if base not in self._counts:
            self._counts[base] = counter(cell, base) if counter is not None else 0
        stored = self._counts[base]
        target = (pending.increments or cell.increments).target(stored)  # type: ignore[attr-defined]
        if all(d.skey == d.key for d in pending.resolved):
            structural = base
        else:
            structural = logic_key(cell, specs, deps, None, structural=True, dynamic=descriptors)
        releases = _collect_releases(pending.resolved, None, cell, base)
        previous: Instance | None = None
        for index in range(min(stored, target) if stored else 1, target + 1):
            key = increment_key(base, index)
            inst = self._by_key.get(key)
            if inst is None:
                inst = Instance(
                    cell,
                    specs,
                    pending.opts,
                    deps if previous is None else {**deps, PREVIOUS_EDGE: previous},
                    key,
                    None,
                    key if structural == base else increment_key(structural, index),
                    releases,
                    dynamic or _NO_DYNAMIC,
                    index,
                    base,
                )
                self._by_key[key] = inst
            previous = inst
        assert previous is not None  # an instruction resolves to an increment >= 1
        return previous


_NO_DYNAMIC: Mapping[str, DynamicEdge] = {}
_NO_RELEASES: Mapping[str, str] = {}
_NONE: tuple[None, None] = (None, None)


def _collect_releases(
    deps: list[Instance], release: str | None, cell: type[Cell], key: str
) -> Mapping[str, str]:
    found: dict[str, str] | None = None
    for dep in deps:
        if dep.upstream_releases:
            found = found or {}
            found.update(dep.upstream_releases)
    if release is not None:
        found = found or {}
        found[f"{cell.full_name}@{key[:12]}"] = release
    return found if found is not None else _NO_RELEASES


__all__ = ["VAR", "CallContext", "DynamicEdge", "Instance", "ReleaseLookup", "Resolver", "walk"]
