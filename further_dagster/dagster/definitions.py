"""build_definitions: projects in, a complete `dagster.Definitions` out (the composition root).

It builds the code location's one `Location` (projection, store root, freshness, mode) and
hands it to every piece: the assets and observe functions close over it, the `further`
resource and the IO manager carry it, the sensor closes over it; the executor finds it through
the job it runs.
"""

from __future__ import annotations

import functools
import gc
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ParamSpec, TypeVar

import dagster as dg

from further_dagster.core.cell import Cell
from further_dagster.core.freshness import normalize_freshness
from further_dagster.core.graph import DefinitionGraph
from further_dagster.core.project import Project
from further_dagster.dagster.assets import build_cell_assets
from further_dagster.dagster.checks import build_checks
from further_dagster.dagster.executor import mode_executor_def
from further_dagster.dagster.location import IO_MANAGER_KEY, RESOURCE_KEY, Location
from further_dagster.dagster.resources import further_io_manager, further_resource
from further_dagster.dagster.sensor import SENSOR_NAME, release_sensor

_P = ParamSpec("_P")
_R = TypeVar("_R")


def _without_gc(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """`fn` with the cyclic garbage collector off (restored after). Building thousands of
    definitions makes many objects with few cycles, and the collector would traverse the growing
    heap (Dagster's included) again and again: 260 collections, two of them full, while a
    1,000-cell chain is built."""

    @functools.wraps(fn)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        enabled = gc.isenabled()
        gc.disable()
        try:
            return fn(*args, **kwargs)
        finally:
            if enabled:
                gc.enable()

    return wrapper


@_without_gc
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
    slurm_client: Any = None,
    trust: Sequence[str] = (),
    asset_checks: bool | Sequence[Any] = True,
    index_url: str | None = None,
    project_init_label: str | Sequence[str] | None = None,
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
        slurm_client: the Slurm client (further_dagster.slurm.client.SlurmClient) that SLURM
            runs of this code location use; default the real one (submitit). Tests pass
            `further_dagster.testing.slurm.FakeSlurmClient()`.
        trust: projects whose pickled results cells of other projects may read as inputs. The
            projects passed here are trusted without it; another project a cell reaches (a
            library's cells) is external, and an input it pickled raises
            `UntrustedPickleError` naming this argument.
        asset_checks: ship the asset checks of further_dagster.dagster.checks:
            `stored_result_intact` on every cell asset and `release_within_shelf_life` on every
            resource cell whose freshness is `current(shelf_life)` (none blocking), in
            `multi_asset_check`s of up to `checks.CHECKS_PER_OP` (100) assets each (one node of
            the asset job per 100 assets); False leaves them out. A sequence
            of asset checks definitions adds them to the shipped ones (as
            `dagster.Definitions(asset_checks=)` takes them).

        index_url: the store's SQL index, written at every commit of its runs (default:
            FURTHER_INDEX_URL, else SQLite at `<root>/.index.sqlite`; "none": no index).
        project_init_label: label(s) of the first project's `project_inits.yaml` applied to
            every asset of the location (assets, partitions and metadata follow); a run picks
            other labels per asset with the op config `project_init_label`.

    Resource cells become observable source assets with key `[project, cell]`.
    """
    graph = DefinitionGraph(projects)
    where = "build_definitions(freshness=...)"
    overrides = normalize_freshness(freshness, where=where)
    overrides.check(graph.cells(), where=where)
    location = Location(
        graph,
        [(c, dict(v)) for c, v in calls] if calls is not None else None,
        root=root,
        freshness=overrides,
        mode=mode,
        slurm_client=slurm_client,
        trust=[*trust, *(p.name for p in projects)],
        index_url=index_url,
        labels=project_init_label,
        label_project=projects[0] if projects else None,
    )
    all_sensors = list(sensors)
    if location.has_resources and release_sensor_interval is not None:
        all_sensors.append(
            release_sensor(
                location, name=SENSOR_NAME, minimum_interval_seconds=release_sensor_interval
            )
        )
    policy = dg.BackfillPolicy.single_run() if single_run_backfills else None
    all_resources: dict[str, Any] = {
        RESOURCE_KEY: further_resource(location),
        IO_MANAGER_KEY: further_io_manager(location),
        **(resources or {}),
    }
    extra = [] if isinstance(asset_checks, bool) else list(asset_checks)
    checks = [*(build_checks(location) if asset_checks is not False else []), *extra]
    return dg.Definitions(
        assets=[*build_cell_assets(location, policy), *assets],
        asset_checks=checks or None,
        resources=all_resources,
        executor=executor if executor is not None else mode_executor_def(mode),
        sensors=all_sensors,
        **definitions_kwargs,
    )
