"""Instances: cells with every parameter resolved (the Instance Tree), keyed by `keys.logic_key`.

Resolution order for one instance's Specs, later wins:
    Specs defaults < subscribed project params < the caller's req_cells edge values
    < session-addressed specs (`specs={"project.cell": {...}}`) < the root call's own values.
A key depends only on Specs, releases and upstream keys, never on upstream values, so every key of
a plan is known before anything runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from further_dagster.core.cell import Cell
from further_dagster.core.graph import DefinitionGraph
from further_dagster.core.hashing import encode
from further_dagster.core.keys import STRUCTURAL_RELEASE, logic_key
from further_dagster.core.params import VAR, M, Opts, ProjectParams, Specs, build_model, expand


@dataclass(frozen=True, eq=False, slots=True)
class Instance:
    """One cell with resolved Specs/Opts and resolved dependencies; `key` is its logic key."""

    cell: type[Cell]
    specs: Specs
    opts: Opts
    deps: Mapping[str, Instance | tuple[Instance, ...]]
    key: str
    release: str | None = None
    # The key with every resource release replaced by a placeholder: stable across releases,
    # so it can name things (partitions) that must not change when external data changes.
    skey: str = ""
    # Releases of every resource instance under this one (itself included), by label; built
    # once at resolution so provenance never walks the graph per instance.
    upstream_releases: Mapping[str, str] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """`project.cell@key12`, the short name used in logs and errors."""
        return f"{self.cell.full_name}@{self.key[:12]}"

    def dep_instances(self) -> Iterator[Instance]:
        for dep in self.deps.values():
            if isinstance(dep, tuple):
                yield from dep
            else:
                yield dep

    def dep_keys(self) -> dict[str, str | list[str]]:
        return {
            edge: [d.key for d in dep] if isinstance(dep, tuple) else dep.key
            for edge, dep in self.deps.items()
        }

    def releases(self) -> dict[str, str]:
        """Releases of every resource instance this one rests on, itself included."""
        return dict(self.upstream_releases)

    def __repr__(self) -> str:
        return f"Instance({self.label})"


def walk(roots: list[Instance]) -> list[Instance]:
    """Unique instances (by key) under `roots`, dependencies before dependents."""
    seen: set[str] = set()
    order: list[Instance] = []
    stack: list[tuple[Instance, bool]] = [(r, False) for r in reversed(roots)]
    while stack:
        inst, expanded = stack.pop()
        if expanded:
            if inst.key not in seen:
                seen.add(inst.key)
                order.append(inst)
            continue
        if inst.key in seen:
            continue
        stack.append((inst, True))
        for dep in reversed(list(inst.dep_instances())):
            if dep.key not in seen:
                stack.append((dep, False))
    return order


ReleaseLookup = Callable[[type[Cell], Specs], str]
"""`lookup(cell, specs) -> release` of a resource instance (the engine's ReleaseResolver is one)."""


@dataclass
class CallContext:
    """The session-level instructions of one call, with every VAR already expanded."""

    params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # project -> values
    specs: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # "p.cell" -> values
    opts: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # "p.cell" -> values
    release_resolver: ReleaseLookup | None = None


_CacheKey = tuple[type[Cell], bytes, tuple[int, ...]]
"""(cell, encoded values and root opts, the session combination's tag of the cell)."""

_NO_TAG: tuple[int, ...] = ()


class _EdgePlan:
    """What a cell's req_cells ask for, in declaration order; built once per cell and resolver.

    `shape` gives, per edge, None (one dependency) or the number of swept combinations;
    `targets[i]` and `values[i]` are the i-th dependency those expand to, and `keys[i]` its
    cache key. Parallel lists rather than one object per dependency: a sweep of 100,000 points
    would otherwise add 100,000 objects for the garbage collector to traverse.
    """

    __slots__ = ("shape", "targets", "values", "keys")

    def __init__(self, cell: type[Cell], targets: Mapping[str, type[Cell]]) -> None:
        self.shape: list[tuple[str, int | None]] = []
        self.targets: list[type[Cell]] = []
        self.values: list[Mapping[str, Any]] = []
        for edge, req in cell.req_cells.items():
            target = targets[edge]
            if req.swept:
                combos = expand(req.values)
                self.shape.append((edge, len(combos)))
                self.targets.extend([target] * len(combos))
                self.values.extend(combos)
            else:
                self.shape.append((edge, None))
                self.targets.append(target)
                self.values.append(req.values)
        # Encoded only when first visited, as the recursive resolver did, so an edge value
        # that cannot be encoded fails after the edges before it were resolved.
        self.keys: list[_CacheKey | None] = [None] * len(self.targets)


class _Pending:
    """An instance being resolved: Specs and Opts known, dependencies resolved so far."""

    __slots__ = ("cell", "cache_key", "specs", "opts", "plan", "resolved")

    def __init__(
        self, cell: type[Cell], cache_key: _CacheKey, specs: Specs, opts: Opts, plan: _EdgePlan
    ) -> None:
        self.cell = cell
        self.cache_key = cache_key
        self.specs = specs
        self.opts = opts
        self.plan = plan
        self.resolved: list[Instance] = []


_EMPTY = encode({})


def _cache_key(
    cell: type[Cell],
    values: Mapping[str, Any],
    root_opts: Mapping[str, Any] | None,
    tag: tuple[int, ...] = _NO_TAG,
) -> _CacheKey:
    if values or root_opts:
        encoded = encode(dict(values)) + (encode(dict(root_opts)) if root_opts else _EMPTY)
        return (cell, encoded, tag)
    return (cell, b"", tag)


class Resolver:
    """Turns (cell, values) into Instances within one CallContext, sharing equal sub-instances.

    Resolution walks the dependency graph depth first, each edge in declaration order, with an
    explicit stack rather than recursion, so a chain of any length resolves without touching
    the interpreter's recursion limit. Instances are cached by (cell, encoded values) and shared
    by logic key.

    One resolver may serve several contexts in turn (`use`: the combinations of a session-level
    sweep), sharing every instance that the contexts agree on: the caller tags each cell with
    what of the context can change it (itself or anything upstream), and the tag is part of
    the cache key.
    """

    def __init__(self, graph: DefinitionGraph, context: CallContext | None = None) -> None:
        self.graph = graph
        self.context = context or CallContext()
        self._tags: Mapping[type[Cell], tuple[int, ...]] = {}
        self._project_params: dict[tuple[str, bytes], ProjectParams] = {}
        self._cache: dict[_CacheKey, Instance] = {}
        self._by_key: dict[str, Instance] = {}
        self._plans: dict[type[Cell], _EdgePlan] = {}

    def use(self, context: CallContext, tags: Mapping[type[Cell], tuple[int, ...]]) -> None:
        """Resolve in `context` from now on. `tags[cell]` must differ between two contexts
        whenever they could resolve `cell` differently (its addressed Specs or Opts, its
        project's params, or those of any cell upstream); an untagged cell is the same in
        every context this resolver serves."""
        self.context = context
        self._tags = tags

    def project_params(self, project_name: str) -> ProjectParams:
        """The validated project params of `project_name` in this call context."""
        values = self.context.params.get(project_name, {})
        slot = (project_name, encode(dict(values)) if values else b"")
        params = self._project_params.get(slot)
        if params is None:
            project = self.graph.projects[project_name]
            params = build_model(
                project.params, values, where=f"project {project_name!r}", what="project params"
            )
            self._project_params[slot] = params
        return params

    def instance(
        self,
        cell: type[Cell],
        values: Mapping[str, Any] | None = None,
        *,
        root_opts: Mapping[str, Any] | None = None,
    ) -> Instance:
        """The instance of `cell` given edge (or root) `values`; no VAR allowed here.

        Raises:
            SpecsValidationError: Specs, Opts or project params of some instance are invalid.
        """
        values = values or {}
        tags = self._tags
        cache_key = _cache_key(cell, values, root_opts, tags.get(cell, _NO_TAG))
        cache = self._cache
        found = cache.get(cache_key)
        if found is not None:
            return found
        stack = [self._open(cell, cache_key, values, root_opts)]
        while True:
            top = stack[-1]
            plan = top.plan
            keys = plan.keys
            resolved = top.resolved
            at = len(resolved)
            while at < len(keys):
                key = keys[at]
                if key is None:
                    target = plan.targets[at]
                    key = _cache_key(target, plan.values[at], None, tags.get(target, _NO_TAG))
                    if target not in tags:  # the same in every context: keep it
                        keys[at] = key
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
            stack.append(self._open(plan.targets[at], key, plan.values[at], None))

    def _open(
        self,
        cell: type[Cell],
        cache_key: _CacheKey,
        values: Mapping[str, Any],
        root_opts: Mapping[str, Any] | None,
    ) -> _Pending:
        """Validate the Specs and Opts of a new instance; its dependencies come next."""
        merged: dict[str, Any] = {}
        if cell.project_params:
            pp = self.project_params(cell.project.name)
            for name in cell.project_params:
                merged[name] = getattr(pp, name)
        merged.update(values)
        addressed = self.context.specs.get(cell.full_name)
        if addressed:
            merged.update(addressed)
        specs = _defaults(cell.Specs, cell.full_name, merged, "Specs")
        addressed_opts = self.context.opts.get(cell.full_name)
        opts_values = {**(addressed_opts or {}), **(root_opts or {})}
        opts = _defaults(cell.Opts, cell.full_name, opts_values, "Opts")
        plan = self._plans.get(cell)
        if plan is None:
            plan = self._plans[cell] = _EdgePlan(cell, self.graph.targets[cell])
        return _Pending(cell, cache_key, specs, opts, plan)

    def _close(self, pending: _Pending) -> Instance:
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

        release = None
        if cell.is_resource:
            if self.context.release_resolver is None:
                raise RuntimeError(f"{cell.full_name} is a resource cell but no release resolver")
            release = self.context.release_resolver(cell, specs)
        key = logic_key(cell, specs, deps, release)
        inst = self._by_key.get(key)
        if inst is None:
            if release is None and all(d.skey == d.key for d in _flat(deps)):
                skey = key
            else:
                skey = logic_key(
                    cell,
                    specs,
                    deps,
                    STRUCTURAL_RELEASE if cell.is_resource else None,
                    structural=True,
                )
            inst = Instance(
                cell,
                specs,
                pending.opts,
                deps,
                key,
                release,
                skey,
                _collect_releases(deps, release, cell, key),
            )
            self._by_key[key] = inst
        self._cache[pending.cache_key] = inst
        return inst


_NO_RELEASES: Mapping[str, str] = {}


def _collect_releases(
    deps: Mapping[str, Instance | tuple[Instance, ...]],
    release: str | None,
    cell: type[Cell],
    key: str,
) -> Mapping[str, str]:
    found: dict[str, str] | None = None
    for dep in _flat(deps):
        if dep.upstream_releases:
            found = found or {}
            found.update(dep.upstream_releases)
    if release is not None:
        found = found or {}
        found[f"{cell.full_name}@{key[:12]}"] = release
    return found if found is not None else _NO_RELEASES


_DEFAULT_MODELS: dict[type[Any], Any] = {}


def _defaults(model: type[M], where: str, values: Mapping[str, Any], what: str) -> M:
    """Validate `values` into `model`; the all-defaults model (frozen) is built only once."""
    if values:
        return build_model(model, values, where=where, what=what)
    found: M | None = _DEFAULT_MODELS.get(model)
    if found is None:
        found = _DEFAULT_MODELS[model] = build_model(model, {}, where=where, what=what)
    return found


def _flat(deps: Mapping[str, Instance | tuple[Instance, ...]]) -> Iterator[Instance]:
    for dep in deps.values():
        if isinstance(dep, tuple):
            yield from dep
        else:
            yield dep


def split_session_values(values: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Expand a mapping whose leaves may be VARs (nested one level) into concrete combos."""
    flat: dict[str, Any] = {}
    for name, value in values.items():
        if isinstance(value, Mapping):
            for inner, v in value.items():
                flat[f"{name}\x00{inner}"] = v
        else:
            flat[name] = value
    combos = []
    for combo in expand(flat):
        nested: dict[str, Any] = {}
        for name, v in combo.items():
            if "\x00" in name:
                outer, inner = name.split("\x00", 1)
                nested.setdefault(outer, {})[inner] = v
            else:
                nested[name] = v
        combos.append(nested)
    return combos


__all__ = ["VAR", "CallContext", "Instance", "ReleaseLookup", "Resolver", "walk"]
