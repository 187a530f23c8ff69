"""Execution modes in Dagster: one executor that runs a run in the mode it asks for.

The run's mode is its ceiling (the Further seed's rule): the run tag `further/mode` wins, then
the executor run config `mode`, then the code location's default (`build_definitions(mode=)`).

| mode             | steps run by                                    | a step's instances     |
|------------------|-------------------------------------------------|------------------------|
| INLINE           | Dagster's in-process executor                   | one after another      |
| LOCAL            | Dagster's multiprocess executor                 | threads                |
| LOCAL_PROCESSES  | Dagster's multiprocess executor                 | spawned processes      |
| DASK             | dagster-dask's executor (a local cluster)       | Dask tasks, same cluster |
| SLURM            | step-delegating executor, Slurm step handler    | one Slurm job array    |

Each cell runs in its effective mode under the ceiling (`engine.modes.effective_mode`): a cell
may ask for a mode at or below the run's, in the same branch; `in_parallel=False` forces it
INLINE. Under SLURM an INLINE cell's step runs next to the run worker, not as a Slurm job.
Whatever the mode, `SkipCachedExecutor` drops every step whose instances are stored first.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import dagster as dg

from further_dagster.dagster import _compat
from further_dagster.dagster.executor import RECORD_CHOICES, SkipCachedExecutor
from further_dagster.dagster.slurm_config import spec_config_schema, spec_from_config
from further_dagster.dagster.step_modes import (
    MODE_TAG,
    run_mode,
    step_mode,
    step_slurm_settings,
)
from further_dagster.engine.modes import Mode, parse_mode

__all__ = [
    "MODE_TAG",
    "ModeExecutor",
    "dask_executor",
    "mode_executor_def",
    "run_mode",
    "slurm_executor",
    "step_mode",
    "step_slurm_settings",
]


class ModeExecutor(_compat.Executor):
    """Picks Dagster's executor for a run's mode at execution time, skipping stored steps."""

    def __init__(self, config: Mapping[str, Any], default_mode: str | Mode) -> None:
        self.config = dict(config)
        self.default_mode = parse_mode(default_mode, where="build_definitions(mode=...)")

    @property
    def retries(self) -> Any:
        return _compat.RetryMode.from_config(self.config["retries"])

    def inner(self, mode: Mode) -> _compat.Executor:
        """Dagster's executor for `mode`, configured from this executor's config."""
        config = self.config
        if mode is Mode.INLINE:
            return _compat.inner_executor("in_process", {"retries": config["retries"]})
        if mode in (Mode.LOCAL, Mode.LOCAL_PROCESSES):
            return _compat.inner_executor(
                "multiprocess",
                {"retries": config["retries"], "max_concurrent": config["max_concurrent"]},
            )
        if mode is Mode.DASK:
            from further_dagster.dagster.dask_cluster import dask_inner

            return dask_inner(config.get("dask") or {})
        from further_dagster.dagster.slurm_step_handler import SlurmStepHandler

        slurm = dict(config.get("slurm") or {})
        handler = SlurmStepHandler(
            spec_from_config(slurm),
            folder=slurm.get("folder"),
            python=slurm.get("python"),
            array=bool(slurm.get("array", True)),
            store_root=config.get("store_root"),
        )
        return _compat.StepDelegatingExecutor(
            handler,
            retries=self.retries,
            sleep_seconds=float(slurm.get("poll_interval_s", 0.5)),
            check_step_health_interval_seconds=int(slurm.get("check_health_interval_s", 5)),
            max_concurrent=config["max_concurrent"],
        )

    def execute(self, plan_context: Any, execution_plan: Any) -> Iterator[Any]:
        run = plan_context.dagster_run
        mode = run_mode(run.tags, run.run_config, self.default_mode)
        inner = self.inner(mode)
        context = _compat.with_executor(plan_context, inner)
        wrapper = SkipCachedExecutor(
            inner, store_root=self.config.get("store_root"), record=self.config["record_cached"]
        )
        yield from wrapper.execute(context, execution_plan)


def _config_schema(default_mode: Mode, store_root: str | None) -> dict[str, Any]:
    return {
        "mode": dg.Field(
            dg.Noneable(str),
            default_value=None,
            description=(
                "INLINE, LOCAL, LOCAL_PROCESSES, DASK or SLURM (the run's ceiling); "
                f"default {default_mode.value}; the run tag {MODE_TAG} wins over it"
            ),
        ),
        "max_concurrent": dg.Field(
            dg.Noneable(int), default_value=None, description="steps running at once"
        ),
        "retries": _compat.get_retries_config(),
        "record_cached": dg.Field(
            dg.Enum("FurtherModeRecordCached", [dg.EnumValue(c) for c in RECORD_CHOICES]),
            default_value="materialization",
            description="What a skipped (already stored) step records for its assets.",
        ),
        "store_root": dg.Field(
            dg.Noneable(str),
            default_value=store_root,
            description="Store root (default: FURTHER_ROOT or ./.further)",
        ),
        "slurm": dg.Field(
            {
                **spec_config_schema(),
                "folder": dg.Field(
                    dg.Noneable(str),
                    default_value=None,
                    description="submitit folder on a shared filesystem (default: the Slurm "
                    "run launcher's, else <DAGSTER_HOME>/slurm); one subfolder per run",
                ),
                "python": dg.Field(
                    dg.Noneable(str), default_value=None, description="interpreter for the jobs"
                ),
                "array": dg.Field(
                    bool,
                    default_value=True,
                    description="submit a step's ready instances as one job array (False: one "
                    "sbatch per instance)",
                ),
                "check_health_interval_s": dg.Field(
                    int, default_value=5, description="seconds between Slurm state checks"
                ),
                "poll_interval_s": dg.Field(
                    float, default_value=0.5, description="seconds between event-log polls"
                ),
            },
            is_required=False,
            description="SLURM mode: this run's SlurmSpec layer (above the launcher defaults, "
            "below each cell's own spec) and how jobs are watched",
        ),
        "dask": dg.Field(
            {"cluster": dg.Field(dg.Permissive(), is_required=False)},
            is_required=False,
            description="DASK mode: dagster-dask's `cluster` config (default: a local cluster)",
        ),
    }


def mode_executor_def(
    default_mode: str | Mode = Mode.LOCAL, *, name: str = "further", store_root: str | None = None
) -> dg.ExecutorDefinition:
    """The executor of further_dagster Definitions: runs a run in its mode (see module doc)."""
    default = parse_mode(default_mode, where="mode_executor_def")

    @dg.executor(
        name=name,
        config_schema=_config_schema(default, store_root),
        requirements=dg.multiple_process_executor_requirements(),
    )
    def _further_mode_executor(init_context: dg.InitExecutorContext) -> _compat.Executor:
        return ModeExecutor(init_context.executor_config, default)

    return _further_mode_executor


slurm_executor = mode_executor_def(Mode.SLURM, name="further_slurm")
"""Each step as a Slurm job (sweeps: one job array per step), stored steps never submitted."""

dask_executor = mode_executor_def(Mode.DASK, name="further_dask")
"""Each step on dagster-dask's executor (a local Dask cluster by default), stored steps skipped."""
