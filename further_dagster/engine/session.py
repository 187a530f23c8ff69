"""Session: call cells from a notebook or a script, computing only what is not stored."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from further_dagster.core.cell import Cell, Contributions
from further_dagster.core.graph import DefinitionGraph
from further_dagster.core.instances import (
    CallContext,
    Instance,
    Resolver,
    split_session_values,
    walk,
)
from further_dagster.core.params import has_var
from further_dagster.core.project import Project, all_projects, resolve_cell
from further_dagster.engine.compute import is_stored, load
from further_dagster.engine.modes import Mode, parse_mode
from further_dagster.engine.scheduler import RunReport, run_missing
from further_dagster.store import ArtifactStore

log = logging.getLogger("further")


def _install_console_logging() -> None:
    """Progress goes to stderr unless the application configured logging itself."""
    if log.handlers or logging.getLogger().handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s further %(message)s", "%H:%M:%S"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)


@dataclass(frozen=True)
class Plan:
    """The instances one call needs: `roots` (one per session-level VAR combination), every
    unique instance dependencies-first, and which of them are not stored yet."""

    roots: list[Instance]
    instances: list[Instance]
    missing: list[Instance]
    swept: bool


class Session:
    """Calls cells, computing only instances whose logic key is not stored.

    Args:
        *projects: projects to load and check up front (the called cell's project and the
            projects its edges reach are always loaded).
        root: store root (default: env FURTHER_ROOT, else `.further` beside pyproject.toml).
        mode: INLINE (one thread, the default) or LOCAL (thread pool); LOCAL_PROCESSES uses a
            process pool. DASK and SLURM run through Dagster.
        max_workers: pool size for LOCAL modes.
        progress: log progress lines to stderr (when logging is not configured).
        store: an ArtifactStore to use instead of `root`.
    """

    def __init__(
        self,
        *projects: Project,
        root: str | Path | None = None,
        mode: str | Mode = Mode.INLINE,
        max_workers: int | None = None,
        progress: bool = True,
        store: ArtifactStore | None = None,
    ) -> None:
        self.store = store or ArtifactStore(root)
        self.mode = parse_mode(mode, where="Session")
        self.max_workers = max_workers
        self._projects = list(projects)
        self._graphs: dict[tuple[str, ...], tuple[DefinitionGraph, int]] = {}
        self.last_report: RunReport | None = None
        if progress:
            _install_console_logging()

    def graph_for(self, target: type[Cell]) -> DefinitionGraph:
        """The definition graph of the session's projects (default: the called cell's project)
        and every project their edges reach; rebuilt when cells are added."""
        projects = list(self._projects)
        if target.project not in projects:
            projects.append(target.project)
        names = tuple(sorted(p.name for p in projects))
        size = sum(len(p.cells) for p in all_projects().values())
        cached = self._graphs.get(names)
        if cached is None or cached[1] != size:
            cached = (DefinitionGraph(projects), size)
            self._graphs[names] = cached
        return cached[0]

    def plan(
        self,
        cell: str | type[Cell],
        *,
        specs: Mapping[str, Mapping[str, Any]] | None = None,
        params: Mapping[str, Any] | None = None,
        project_params: Mapping[str, Mapping[str, Any]] | None = None,
        opts: Mapping[str, Mapping[str, Any]] | None = None,
        **values: Any,
    ) -> Plan:
        """Resolve a call without running it (same arguments as `call`)."""
        target = resolve_cell(cell)
        graph = self.graph_for(target)
        all_params = {**(project_params or {})}
        if params:
            all_params[target.project.name] = {**all_params.get(target.project.name, {}), **params}
        session_values = {"values": values, "params": all_params, "specs": dict(specs or {})}
        swept = has_var(values) or any(
            has_var(v) for group in (all_params, specs or {}) for v in group.values()
        )
        roots = []
        for combo in _expand_session(session_values):
            context = CallContext(
                params=combo["params"],
                specs=combo["specs"],
                opts=opts or {},
                release_resolver=self._release_resolver(),
            )
            resolver = Resolver(graph, context)
            roots.append(
                resolver.instance(
                    target, combo["values"], root_opts=(opts or {}).get(target.full_name)
                )
            )
        instances = walk(roots)
        missing = [inst for inst in instances if not is_stored(self.store, inst)]
        return Plan(roots=roots, instances=instances, missing=missing, swept=swept)

    def _release_resolver(self) -> Any:
        return None

    def call(
        self,
        cell: str | type[Cell],
        *,
        specs: Mapping[str, Mapping[str, Any]] | None = None,
        params: Mapping[str, Any] | None = None,
        project_params: Mapping[str, Mapping[str, Any]] | None = None,
        opts: Mapping[str, Mapping[str, Any]] | None = None,
        mode: str | Mode | None = None,
        **values: Any,
    ) -> Contributions | list[Contributions]:
        """Compute (or load) `cell` and return its contributions.

        Args:
            cell: "project.cell" or the Cell class.
            specs: addressed Specs for any cell of the graph: {"project.cell": {field: value}}.
            params: project params of the called cell's project, e.g. {"seed": VAR([0, 1])}.
            project_params: project params of other projects: {"project": {name: value}}.
            opts: addressed Opts: {"project.cell": {field: value}} (never part of any key).
            mode: execution mode for this call (default: the session's).
            **values: Specs of the called cell; a `VAR([...])` sweeps it.

        Returns:
            The Contributions (mapping and attributes) of the called instance, or a list of
            them, one per combination, when any session-level value is a VAR.
        """
        start = time.perf_counter()
        plan = self.plan(
            cell, specs=specs, params=params, project_params=project_params, opts=opts, **values
        )
        report = RunReport()
        report.cached = [i.key for i in plan.instances if i not in plan.missing]
        if plan.missing:
            log.info(
                "%s: %d instance(s), %d stored, %d to compute",
                plan.roots[0].cell.full_name,
                len(plan.instances),
                len(plan.instances) - len(plan.missing),
                len(plan.missing),
            )
        self.last_report = report
        run_missing(
            self.store,
            plan.missing,
            mode=parse_mode(mode, where="call") if mode else self.mode,
            max_workers=self.max_workers,
            report=report,
        )
        results = [load(self.store, root) for root in plan.roots]
        report.seconds = time.perf_counter() - start
        return results if plan.swept else results[0]

    def load(self, instance: Instance) -> Contributions:
        """Load a stored instance (e.g. one from `plan(...)`)."""
        return load(self.store, instance)


def _expand_session(values: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Cartesian product over every VAR in root values, params and addressed specs."""
    flat = {
        "values": values["values"],
        **{f"params\x01{p}": v for p, v in values["params"].items()},
        **{f"specs\x01{c}": v for c, v in values["specs"].items()},
    }
    combos = []
    for combo in split_session_values(flat):
        out: dict[str, Any] = {"values": combo.get("values", {}), "params": {}, "specs": {}}
        for name, v in combo.items():
            if "\x01" in name:
                group, inner = name.split("\x01", 1)
                out[group][inner] = v
        combos.append(out)
    return combos
