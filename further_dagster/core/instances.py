"""Instances: cells with every parameter resolved, and their logic keys.

Resolution order for one instance's Specs, later wins:
    Specs defaults < subscribed project params < the caller's req_cells edge values
    < session-addressed specs (`specs={"project.cell": {...}}`) < the root call's own values.
A key depends only on Specs, releases and upstream keys, never on upstream values, so every key of
a plan is known before anything runs.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import metadata
from typing import Any

from further_dagster.core.cell import Cell
from further_dagster.core.graph import DefinitionGraph
from further_dagster.core.hashing import digest, digest_encoded, encode
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


@cache
def library_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not-installed"


ReleaseResolver = Callable[[type[Cell], Specs], str]


@dataclass
class CallContext:
    """The session-level instructions of one call, with every VAR already expanded."""

    params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # project -> values
    specs: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # "p.cell" -> values
    opts: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # "p.cell" -> values
    release_resolver: ReleaseResolver | None = None


class Resolver:
    """Turns (cell, values) into Instances within one CallContext, sharing equal sub-instances."""

    def __init__(self, graph: DefinitionGraph, context: CallContext | None = None) -> None:
        self.graph = graph
        self.context = context or CallContext()
        self._project_params: dict[str, ProjectParams] = {}
        self._cache: dict[tuple[type[Cell], bytes], Instance] = {}
        self._by_key: dict[str, Instance] = {}

    def project_params(self, project_name: str) -> ProjectParams:
        params = self._project_params.get(project_name)
        if params is None:
            project = self.graph.projects[project_name]
            values = self.context.params.get(project_name, {})
            params = build_model(
                project.params, values, where=f"project {project_name!r}", what="project params"
            )
            self._project_params[project_name] = params
        return params

    def instance(
        self,
        cell: type[Cell],
        values: Mapping[str, Any] | None = None,
        *,
        root_opts: Mapping[str, Any] | None = None,
    ) -> Instance:
        """The instance of `cell` given edge (or root) `values`; no VAR allowed here."""
        values = values or {}
        if values or root_opts:
            cache_key = (cell, encode(dict(values)) + encode(dict(root_opts or {})))
        else:
            cache_key = (cell, b"")
        cached = self._cache.get(cache_key)
        if cached is not None:
            return cached
        if sys.getrecursionlimit() < 20000:
            sys.setrecursionlimit(20000)  # a chain of thousands of cells resolves recursively
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

        deps: dict[str, Instance | tuple[Instance, ...]] = {}
        targets = self.graph.targets[cell]
        for edge, req in cell.req_cells.items():
            target = targets[edge]
            if req.swept:
                deps[edge] = tuple(self.instance(target, combo) for combo in expand(req.values))
            else:
                deps[edge] = self.instance(target, req.values)

        release = None
        if cell.is_resource:
            if self.context.release_resolver is None:
                raise RuntimeError(f"{cell.full_name} is a resource cell but no release resolver")
            release = self.context.release_resolver(cell, specs)  # type: ignore[arg-type]
        key = logic_key(cell, specs, deps, release)  # type: ignore[arg-type]
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
                )  # type: ignore[arg-type]
            inst = Instance(
                cell,
                specs,
                opts,
                deps,
                key,
                release,
                skey,  # type: ignore[arg-type]
                _collect_releases(deps, release, cell, key),
            )
            self._by_key[key] = inst
        self._cache[cache_key] = inst
        return inst


STRUCTURAL_RELEASE = "<release>"

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
    found = _DEFAULT_MODELS.get(model)
    if found is None:
        found = _DEFAULT_MODELS[model] = build_model(model, {}, where=where, what=what)
    return found  # type: ignore[no-any-return]


def _flat(deps: Mapping[str, Instance | tuple[Instance, ...]]) -> Iterator[Instance]:
    for dep in deps.values():
        if isinstance(dep, tuple):
            yield from dep
        else:
            yield dep


def logic_key(
    cell: type[Cell],
    specs: Specs,
    deps: Mapping[str, Instance | tuple[Instance, ...]],
    release: str | None,
    *,
    structural: bool = False,
) -> str:
    """DESIGN.md section 4: project, cell, logic_version, Specs, dependency keys, release and
    tracked library versions; nothing else (no Opts, run ids, paths, timestamps, policies).

    `structural=True` hashes the dependencies' structural keys instead of their logic keys.
    """
    attr = "skey" if structural else "key"
    dep_keys = {
        edge: [getattr(d, attr) for d in dep] if isinstance(dep, tuple) else getattr(dep, attr)
        for edge, dep in deps.items()
    }
    # This is encode() of the payload dict {"logic_version", "cell", "deps", "specs", "project",
    # "release"?, "libraries"?}, written out in its canonical (sorted-key) order because it is
    # the hot path of every cached lookup; test_keys pins that both spellings agree.
    parts = [
        _key_prefix(cell),
        b"s4:deps",
        encode(dep_keys),
        b"s5:specs",
        encode(specs.__dict__),
        _PROJECT_FIELD,
        encode(cell.project.name),
    ]
    count = 5
    if release is not None:
        parts += [_RELEASE_FIELD, encode(release)]
        count += 1
    if cell.track_libraries:
        parts += [
            b"s9:libraries",
            encode({lib: library_version(lib) for lib in cell.track_libraries}),
        ]
        count += 1
    return digest_encoded(b"d%d{" % count + b"".join(parts) + b"}")


_PROJECT_FIELD = encode("project")
_RELEASE_FIELD = encode("release")
_PREFIXES: dict[tuple[type[Cell], Any], bytes] = {}


def _key_prefix(cell: type[Cell]) -> bytes:
    """Encoded "logic_version" and "cell" entries, which come first in the sorted payload."""
    found = _PREFIXES.get((cell, cell.logic_version))
    if found is None:
        found = (
            encode("logic_version")
            + encode(cell.logic_version)
            + encode("cell")
            + encode(cell.name)
        )
        _PREFIXES[(cell, cell.logic_version)] = found
    return found


def reference_logic_key(
    cell: type[Cell],
    specs: Specs,
    deps: Mapping[str, Instance | tuple[Instance, ...]],
    release: str | None,
) -> str:
    """The plain-dict spelling of logic_key, kept to prove the fast one encodes the same."""
    payload: dict[str, Any] = {
        "project": cell.project.name,
        "cell": cell.name,
        "logic_version": cell.logic_version,
        "specs": dict(specs),
        "deps": {
            edge: [d.key for d in dep] if isinstance(dep, tuple) else dep.key
            for edge, dep in deps.items()
        },
    }
    if release is not None:
        payload["release"] = release
    if cell.track_libraries:
        payload["libraries"] = {lib: library_version(lib) for lib in cell.track_libraries}
    return digest(payload)


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


__all__ = ["VAR", "CallContext", "Instance", "Resolver", "logic_key", "walk"]
