"""One precedence chain for a run: its mode, its freshness, its partitions and its Slurm layer.

Every reader of a run's settings (the executor, an asset step, the IO manager, the Slurm step
handler) calls these functions, so they cannot drift apart. Weakest first:

- mode: `build_definitions(mode=)` (or the executor's default) < executor run config
  `execution.config.mode` < run tag `further/mode`; each cell may ask for less (`Cell.mode`).
  A step's own default is the `further` resource's `mode`, when set.
- freshness: `build_definitions(freshness=)` < run config
  `resources.further.config.freshness` < run tag `further/freshness`; below them all, each
  resource cell's own policy.
- Slurm: the instance's `SlurmRunLauncher` fields (dagster.yaml) < executor run config
  `execution.config.slurm` < each cell's `slurm`; the run worker's job: launcher < run tag
  `further/slurm`.

Inside a step launched by the Slurm step handler, the handler's route (run tag
`further/slurm_route/<step>`, written before the launch) sets the step's ceiling: INLINE in the
step's own Slurm job, SLURM in a step that fans out as job arrays.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from further_dagster.core.freshness import FreshnessOverrides, normalize_freshness
from further_dagster.dagster import _compat
from further_dagster.dagster import tags as T
from further_dagster.dagster.location import RESOURCE_KEY, Location, labels_of_tags
from further_dagster.engine.modes import Mode, parse_mode
from further_dagster.engine.projection import CellAsset
from further_dagster.slurm import SlurmSpec, merge

# Defaults of the executor's `slurm` config, in one place for its schema (executor.py) and for
# readers of a partial config.
SLURM_DEFAULTS: Mapping[str, Any] = {
    "folder": None,
    "python": None,
    "array": True,
    "check_health_interval_s": 5,
    "poll_interval_s": 0.5,
}
ROUTE_JOB = "job"  # the step is one Slurm job: its instances run inline in it
ROUTE_LOCAL = "local"  # the step runs next to the run worker and submits job arrays


def executor_config(run_config: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """`execution.config` of a run config (empty when not given)."""
    execution = (run_config or {}).get("execution") or {}
    return execution.get("config") or {}


def resolved_executor_config(job_def: Any, run_config: Mapping[str, Any] | None) -> dict[str, Any]:
    """The executor config a run's executor sees: run config over the executor's `configured`
    values and schema defaults. A step process reads it this way, so that it agrees with the
    executor that launched it."""
    return dict(_compat.executor_config(job_def, dict(run_config or {})) or {})


def run_mode(
    tags: Mapping[str, str], run_config: Mapping[str, Any] | None, default: str | Mode
) -> Mode:
    """A run's mode (ceiling): tag `further/mode` > executor config `mode` > `default`."""
    if tags.get(T.MODE_TAG):
        return parse_mode(tags[T.MODE_TAG], where=f"run tag {T.MODE_TAG}")
    config = executor_config(run_config)
    if config.get("mode"):
        return parse_mode(config["mode"], where="executor run config `mode`")
    inner = config.get("inner")  # the older `inner: in_process | multiprocess` spelling
    if inner == "in_process":
        return Mode.INLINE
    default_mode = parse_mode(default, where="build_definitions(mode=...)")
    if inner == "multiprocess" and default_mode not in (Mode.LOCAL, Mode.LOCAL_PROCESSES):
        return Mode.LOCAL
    return default_mode


def step_mode(
    location: Location, run: Any, step_key: str, job_def: Any, default: str | Mode | None
) -> Mode:
    """The ceiling for the instances of the step running now (see the module docstring)."""
    route = run.tags.get(T.ROUTE_TAG_PREFIX + step_key)
    if route == ROUTE_JOB:
        return Mode.INLINE
    if route == ROUTE_LOCAL:
        return Mode.SLURM
    config = {"execution": {"config": resolved_executor_config(job_def, run.run_config)}}
    return run_mode(run.tags, config, default or location.default_mode)


def configured_freshness(run_config: Mapping[str, Any] | None) -> Any:
    """`resources.further.config.freshness` of a run config, if set."""
    resources = (run_config or {}).get("resources") or {}
    config = (resources.get(RESOURCE_KEY) or {}).get("config") or {}
    return config.get("freshness")


def run_freshness(
    location: Location, tags: Mapping[str, str] | None, run_config: Mapping[str, Any] | None
) -> FreshnessOverrides:
    """The freshness overrides of one run: code location (under the run's labels, when its
    `further/init_label` tag names some) < run config < run tag."""
    tagged = labels_of_tags(tags)
    overrides = location.default_freshness if tagged is None else location.freshness_for(tagged)
    cells = location.graph.cells()
    configured = configured_freshness(run_config)
    if configured:
        where = "run config resources.further.config.freshness"
        given = normalize_freshness(configured, where=where)
        given.check(cells, where=where)
        overrides = overrides.merged(given)
    tag = (tags or {}).get(T.FRESHNESS_TAG)
    if tag:
        given = normalize_freshness(tag, where=f"run tag {T.FRESHNESS_TAG}")
        given.check(cells, where=f"run tag {T.FRESHNESS_TAG}")
        overrides = overrides.merged(given)
    return overrides


def run_partition_keys(tags: Mapping[str, str], asset: CellAsset) -> list[str] | None:
    """The partitions of `asset` a run covers (None for an unpartitioned asset): its one
    partition, its partition range, or all of them."""
    if asset.partitions is None:
        return None
    keys = asset.partitions.keys
    if T.PARTITION_TAG in tags:
        return [tags[T.PARTITION_TAG]]
    if T.RANGE_START_TAG in tags and T.RANGE_END_TAG in tags:
        start, end = tags[T.RANGE_START_TAG], tags[T.RANGE_END_TAG]
        if start in keys and end in keys:
            return keys[keys.index(start) : keys.index(end) + 1]
        return [start, end]  # unknown: instances_for names them in its error
    return list(keys)


# --- Slurm -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SlurmLayer:
    """The Slurm settings of one run (below each cell's own `slurm`).

    Attributes:
        base: launcher defaults (dagster.yaml) < executor run config `slurm`.
        folder: this run's submitit folder, `<folder>/<run id>` on a shared filesystem.
        python: interpreter for the jobs (None: this process's).
        array: a fan-out step submits its instances as one job array (False: one sbatch each).
        poll_interval_s / check_health_interval_s: how the step executor watches.
    """

    base: SlurmSpec
    folder: Path
    python: str | None
    array: bool
    poll_interval_s: float
    check_health_interval_s: int


def launcher_layer(instance: Any) -> tuple[SlurmSpec, str | None]:
    """The instance's Slurm run launcher defaults and folder (lowest layer), if it has one."""
    launcher = getattr(instance, "run_launcher", None)
    defaults = getattr(launcher, "defaults", None)
    folder = getattr(launcher, "folder", None)
    return (defaults if isinstance(defaults, SlurmSpec) else SlurmSpec()), folder


def slurm_layer(instance: Any, run_id: str, config: Mapping[str, Any]) -> SlurmLayer:
    """The Slurm layer of run `run_id` under the executor config `config` (see the module
    docstring for the order)."""
    from further_dagster.dagster.slurm_schema import default_folder, spec_from_config

    config = {**SLURM_DEFAULTS, **dict(config.get("slurm") or {})}
    defaults, launcher_folder = launcher_layer(instance)
    root = config["folder"] or launcher_folder
    folder = Path(root) if root else default_folder(instance)
    return SlurmLayer(
        base=merge(defaults, spec_from_config(config)),
        folder=folder / run_id,
        python=config["python"],
        array=bool(config["array"]),
        poll_interval_s=float(config["poll_interval_s"]),
        check_health_interval_s=int(config["check_health_interval_s"]),
    )


__all__ = [
    "ROUTE_JOB",
    "ROUTE_LOCAL",
    "SLURM_DEFAULTS",
    "SlurmLayer",
    "configured_freshness",
    "executor_config",
    "launcher_layer",
    "resolved_executor_config",
    "run_freshness",
    "run_mode",
    "run_partition_keys",
    "slurm_layer",
    "step_mode",
]
