"""build_definitions: projects in, a complete `dagster.Definitions` out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg

from further_dagster.core.cell import Cell
from further_dagster.core.freshness import normalize_freshness
from further_dagster.core.graph import DefinitionGraph
from further_dagster.core.project import Project
from further_dagster.dagster.assets import build_cell_assets
from further_dagster.dagster.modes import mode_executor_def
from further_dagster.dagster.registry import Compiled
from further_dagster.dagster.releases import resolver_factory
from further_dagster.dagster.resources import (
    IO_MANAGER_KEY,
    RESOURCE_KEY,
    FurtherIOManager,
    FurtherStore,
)
from further_dagster.dagster.sensor import SENSOR_NAME, release_sensor


def build_definitions(
    *projects: Project,
    calls: Sequence[tuple[str | type[Cell], Mapping[str, Any]]] | None = None,
    root: str | None = None,
    mode: str = "LOCAL",
    executor: dg.ExecutorDefinition | None = None,
    single_run_backfills: bool = True,
    freshness: Any = None,
    release_sensor_interval: int | None = 30,
    assets: Sequence[Any] = (),
    resources: Mapping[str, Any] | None = None,
    sensors: Sequence[Any] = (),
    **definitions_kwargs: Any,
) -> dg.Definitions:
    """Compile projects into Dagster definitions.

    Args:
        *projects: the projects whose cells become assets (key `[project, cell]`, group
            `project`, code_version = logic_version, lineage from req_cells).
        calls: the roots to resolve, as (cell, spec values); default: every cell nothing else
            requires, with default values. A VAR in these values sweeps: swept cells become
            partitioned assets.
        root: store root for steps and the IO manager (default: FURTHER_ROOT or ./.further).
        mode: the default execution mode (the ceiling of every run): INLINE, LOCAL,
            LOCAL_PROCESSES, DASK or SLURM; a run picks another with the tag `further/mode` or
            the executor config `mode` (see `further_dagster.dagster.modes`).
        executor: the executor; default: `mode_executor_def(mode)`, which runs each run with
            Dagster's executor for its mode and never starts a step whose instances are stored.
        single_run_backfills: give every asset BackfillPolicy.single_run(), so a sweep backfill
            is one run and `dagster asset materialize --partition-range a...b` works.
        freshness: the code location's freshness override for resource cells (a policy, its
            string form, or {"project" | "project.cell": policy}); runs override it with run
            config (`resources.further.config.freshness`) or the `further/freshness` tag.
        release_sensor_interval: seconds between ticks of `further_release_sensor`, which
            observes resource cells and materializes what a changed release reaches (shipped
            RUNNING when there are resource cells); None leaves the sensor out.
        assets, resources, sensors, **definitions_kwargs: passed on to `dagster.Definitions`.

    Resource cells become observable source assets with key `[project, cell]`.
    """
    graph = DefinitionGraph(projects)
    compiled = Compiled(graph, [(c, dict(v)) for c, v in calls] if calls is not None else None)
    overrides = normalize_freshness(freshness, where="build_definitions(freshness=...)")
    overrides.check(graph.cells(), where="build_definitions(freshness=...)")
    compiled.default_freshness = overrides
    all_sensors = list(sensors)
    if compiled.has_resources:
        compiled.release_resolver_factory = resolver_factory(compiled, root)
        if release_sensor_interval is not None:
            all_sensors.append(
                release_sensor(
                    compiled,
                    root=root,
                    name=SENSOR_NAME,
                    minimum_interval_seconds=release_sensor_interval,
                )
            )
    policy = dg.BackfillPolicy.single_run() if single_run_backfills else None
    cell_assets = build_cell_assets(compiled, policy)
    all_resources: dict[str, Any] = {
        RESOURCE_KEY: FurtherStore(root=root, mode=mode),
        IO_MANAGER_KEY: FurtherIOManager(root=root),
    }
    all_resources.update(resources or {})
    if executor is None:
        executor = mode_executor_def(mode, store_root=root)
    defs = dg.Definitions(
        assets=[*cell_assets, *assets],
        resources=all_resources,
        executor=executor,
        sensors=all_sensors,
        **definitions_kwargs,
    )
    defs.further_compiled = compiled  # type: ignore[attr-defined]
    return defs
