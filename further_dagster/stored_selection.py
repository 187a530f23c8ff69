"""Is everything a `further-dagster materialize` selects already stored? Decided without Dagster.

A re-run of a stored project needs no Dagster run at all: the logic keys of the selected cells
depend only on Specs, releases and upstream keys, so the engine can tell from the store alone
(engine/plan.py's rule, the one the skip-cached executor applies) that nothing is missing. Then
`further-dagster materialize` says so and exits, in a fraction of `dagster`'s start-up, since
neither Dagster nor the code location's Definitions are ever built.

To learn the code location's projects without building its Definitions, the module is imported
while `further_dagster.build_definitions` records its arguments instead of compiling them
(`decide`). Whenever that cannot answer exactly, the caller falls back to the Dagster
path: the module imports Dagster itself (plain assets, a custom executor), it has resource cells
(a run records the releases it reads), the selection uses syntax beyond `*`, `group:NAME`,
`project/cell` with `+`/`*` ancestors or descendants, or something is missing.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from further_dagster.core.cell import Cell
from further_dagster.core.graph import DefinitionGraph
from further_dagster.core.instances import Instance
from further_dagster.core.project import REGISTRY
from further_dagster.engine.plan import missing
from further_dagster.engine.projection import Projection
from further_dagster.store import ArtifactStore, resolve_root

# build_definitions arguments that do not change which instances a selection covers or where
# they are stored; any other argument (extra assets, unknown keywords) means "ask Dagster".
_NEUTRAL = {
    "mode",
    "executor",
    "single_run_backfills",
    "release_sensor_interval",
    "resources",
    "sensors",
    "slurm_client",
    "asset_checks",
}
_STORAGE = {"calls", "root", "freshness", "trust", "index_url"}


@dataclass
class Recorded:
    """The arguments of one `build_definitions` call, not compiled."""

    projects: tuple[Any, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)


@contextmanager
def _recording() -> Iterator[list[Recorded]]:
    import further_dagster

    calls: list[Recorded] = []

    def build_definitions(*projects: Any, **kwargs: Any) -> Recorded:
        found = Recorded(projects, kwargs)
        calls.append(found)
        return found

    # a module attribute wins over the package's lazy __getattr__ (which imports Dagster)
    previous = vars(further_dagster).get("build_definitions")
    setattr(further_dagster, "build_definitions", build_definitions)  # noqa: B010
    try:
        yield calls
    finally:
        if previous is None:
            delattr(further_dagster, "build_definitions")  # noqa: B043
        else:
            setattr(further_dagster, "build_definitions", previous)  # noqa: B010


def decide(module: str, attribute: str, select: str, partition: str | None) -> Stored | None:
    """What `module.attribute` (a module calling `build_definitions`) covers of `select`, when
    all of it is stored (see `all_stored`), learnt without importing Dagster; None otherwise,
    and then the module is not left imported with recorded arguments in place of its
    Definitions, so the Dagster path imports it for real."""
    if "dagster" in sys.modules:
        return None
    before = set(sys.modules)
    projects = REGISTRY.snapshot()
    found: Stored | None = None
    try:
        with _recording():
            loaded = importlib.import_module(module)
            recorded = getattr(loaded, attribute, None)  # a module __getattr__ may build it
        if isinstance(recorded, Recorded) and "dagster" not in sys.modules:
            found = all_stored(recorded, select, partition)
    except Exception:  # noqa: BLE001 - the Dagster path imports it again and reports it
        found = None
    if found is None:
        _forget(module, before)
        REGISTRY.restore(projects)  # its projects are defined again by the real import
    return found


def _forget(module: str, before: set[str]) -> None:
    top = module.partition(".")[0]
    for name in set(sys.modules) - before:
        if name == top or name.startswith(top + "."):
            del sys.modules[name]


@dataclass(frozen=True)
class Stored:
    """A selection found stored: how many assets and instances it covers."""

    assets: int
    instances: int


def all_stored(recorded: Recorded, select: str, partition: str | None) -> Stored | None:
    """The selection's size when every selected instance is stored and intact; None when
    something is missing or when only Dagster can tell (see the module docstring)."""
    kwargs = recorded.kwargs
    if set(kwargs) - _NEUTRAL - _STORAGE or kwargs.get("freshness") is not None:
        return None
    graph = DefinitionGraph(recorded.projects)
    calls = kwargs.get("calls")
    roots = [(c, dict(v)) for c, v in calls] if calls is not None else None
    projection = Projection(graph, roots)
    if projection.has_resources:
        return None
    assets = {f"{c.project.asset_name}/{c.asset_name}": c for c in projection.assets}
    chosen = select_cells(projection, assets, select)
    if not chosen:
        return None
    targets: list[Instance] = []
    for cell in chosen:
        asset = projection.assets[cell]
        if asset.partitions is None:
            targets += asset.instances[None]
        elif partition is None:
            targets += [i for insts in asset.instances.values() for i in insts]
        elif partition in asset.instances:
            targets += asset.instances[partition]
    if not targets:
        return None
    trust = [*kwargs.get("trust", ()), *(p.name for p in recorded.projects)]
    store = ArtifactStore(
        resolve_root(kwargs.get("root")), trust=trust, index_url=kwargs.get("index_url")
    )
    if missing(store, targets, verify=True):
        return None
    return Stored(assets=len(chosen), instances=len({i.key for i in targets}))


def select_cells(
    projection: Projection, assets: Mapping[str, type[Cell]], select: str
) -> list[type[Cell]] | None:
    """The cells of Dagster's selection `select` (the subset of its syntax described in the
    module docstring), in projection order; None for anything else."""
    parents = {c: list(a.upstream) for c, a in projection.assets.items()}
    children: dict[type[Cell], list[type[Cell]]] = {c: [] for c in parents}
    for cell, ups in parents.items():
        for up in ups:
            children.setdefault(up, []).append(cell)
    chosen: set[type[Cell]] = set()
    for token in (t.strip() for t in select.split(",")):
        if token == "*":
            chosen.update(parents)
            continue
        if token.startswith("group:"):
            group = [c for c in parents if c.project.name == token[len("group:") :]]
            if not group:
                return None
            chosen.update(group)
            continue
        up_depth, key, down_depth = _depths(token)
        found = assets.get(key)
        if found is None:
            return None
        chosen.add(found)
        chosen.update(_walk(found, parents, up_depth))
        chosen.update(_walk(found, children, down_depth))
    return [c for c in projection.assets if c in chosen]


def _depths(token: str) -> tuple[int, str, int]:
    """`++a/b*` -> (2, "a/b", unlimited); `*` is unlimited, each `+` one level."""
    unlimited = 1 << 30
    up = unlimited if token.startswith("*") else len(token) - len(token.lstrip("+"))
    down = unlimited if token.endswith("*") else len(token) - len(token.rstrip("+"))
    return up, token.strip("+*"), down


def _walk(
    start: type[Cell], edges: Mapping[type[Cell], Sequence[type[Cell]]], depth: int
) -> set[type[Cell]]:
    seen: set[type[Cell]] = set()
    frontier = [start]
    for _ in range(depth):
        frontier = [n for c in frontier for n in edges.get(c, ()) if n not in seen]
        if not frontier:
            break
        seen.update(frontier)
    return seen


__all__ = ["Recorded", "Stored", "all_stored", "decide", "select_cells"]
