"""The executor of further_dagster: runs each run in the mode it asks for, skipping stored steps.

The run's mode is its ceiling (the Further seed's rule), decided by dagster/run_config.py: the
run tag `further/mode` wins, then the executor run config `mode`, then this executor's default.

| mode             | steps run by (`steps: in_process`, the default) | the run's instances      |
|------------------|-------------------------------------------------|--------------------------|
| INLINE           | Dagster's in-process executor                   | one after another        |
| LOCAL            | in-process, instances as waves (waves.py)       | one thread pool          |
| LOCAL_PROCESSES  | in-process, instances as waves (waves.py)       | one pool of processes    |
| DASK             | in-process, instances as waves (waves.py)       | one Dask cluster         |
| SLURM            | in-process, instances as waves (waves.py)       | job arrays, one pass     |

In SLURM mode the waves are one pass over the run (engine/backends/slurm.py): independent
steps' instances that share a spec are one job array, a dependent step's instances wait in
Slurm (`--dependency=aftercorr/afterok`), so no level waits for the previous one to finish
before it is submitted. The steps run in the run's process (the CLI's, or the Slurm run
worker's job) and record their instances' events as they finish.

With `steps: multiprocess` every mode uses Dagster's own executor for it, a process (or Dask
task) per step, as before the waves: LOCAL and LOCAL_PROCESSES Dagster's multiprocess executor
(each step's instances in threads or processes), DASK dagster-dask's executor, SLURM the
step-delegating executor with the Slurm step handler (dagster/slurm_step_handler.py: one Slurm
job per step, a step with several missing instances as one array); a DASK run with a
`dask.cluster` config uses dagster-dask's executor too (that config is dagster-dask's).

Each cell runs in its effective mode under the ceiling (`engine.modes.effective_mode`): a cell
may ask for a mode at or below the run's, in the same branch; `in_parallel=False` forces it
INLINE. Under SLURM an INLINE cell's step runs next to the run worker, not as a Slurm job.
Whatever the mode, `SkipCachedExecutor` first drops every step whose instances are stored.
The code location (store, projection, freshness) comes from the job being run, so one executor
definition serves any number of code locations.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import dagster as dg

from further_dagster.dagster import _compat
from further_dagster.dagster.location import Location, location_of
from further_dagster.dagster.run_config import SLURM_DEFAULTS, run_mode, slurm_layer
from further_dagster.dagster.skip_cached import RECORD_CHOICES, SkipCachedExecutor
from further_dagster.dagster.sqlite_events import install_sqlite_engine_cache
from further_dagster.dagster.waves import WaveExecutor, wave_mode
from further_dagster.engine.modes import Mode, parse_mode


def dask_inner(config: Mapping[str, Any]) -> _compat.Executor:
    """dagster-dask's `DaskExecutor` for `{"cluster": {kind: {...}}}` (default a local one).

    The `cluster` config is dagster-dask's own: `{local: {n_workers: 2}}`,
    `{existing: {address: "tcp://..."}}`, or any dask-jobqueue cluster it supports.
    """
    from dagster_dask.executor import DaskExecutor

    cluster = dict(config.get("cluster") or {"local": {}})
    if len(cluster) != 1:
        raise dg.DagsterInvalidConfigError(
            "dask.cluster must name exactly one cluster kind (local, existing, slurm, ...)",
            [],
            cluster,
        )
    ((kind, options),) = cluster.items()
    executor: _compat.Executor = DaskExecutor(kind, dict(options or {}))
    return executor


class ModeExecutor(_compat.Executor):
    """Picks Dagster's executor for a run's mode at execution time, skipping stored steps."""

    def __init__(self, config: Mapping[str, Any], default_mode: str | Mode) -> None:
        self.config = dict(config)
        self.default_mode = parse_mode(default_mode, where="mode_executor_def")

    @property
    def retries(self) -> _compat.RetryMode:
        return _compat.RetryMode.from_config(self.config["retries"]) or _compat.RetryMode.DISABLED

    def inner(self, mode: Mode, location: Location | None, run: Any, instance: Any) -> Any:
        """Dagster's executor for `mode`, configured from this executor's config."""
        config = self.config
        waves = config.get("steps", "in_process") == "in_process" and not config.get("dask")
        if waves and wave_mode(mode) and location is not None:
            slurm = None
            if mode is Mode.SLURM:
                from further_dagster.dagster.slurm_step_handler import wave_settings

                slurm = wave_settings(instance, run.run_id, config, location)
            return WaveExecutor(
                location.store(), mode, config["retries"], config["max_concurrent"], slurm
            )
        if mode is Mode.INLINE:
            return _compat.inner_executor("in_process", {"retries": config["retries"]})
        if mode in (Mode.LOCAL, Mode.LOCAL_PROCESSES):
            return _compat.inner_executor(
                "multiprocess",
                {"retries": config["retries"], "max_concurrent": config["max_concurrent"]},
            )
        if mode is not Mode.SLURM:  # DASK, DASK_STATIC_DAG
            return dask_inner(config.get("dask") or {})
        from further_dagster.dagster.slurm_step_handler import SlurmStepHandler

        layer = slurm_layer(instance, run.run_id, config)
        handler = SlurmStepHandler(
            location, config, client=location.slurm_client if location is not None else None
        )
        return _compat.StepDelegatingExecutor(
            handler,
            retries=self.retries,
            sleep_seconds=layer.poll_interval_s,
            check_step_health_interval_seconds=layer.check_health_interval_s,
            max_concurrent=config["max_concurrent"],
        )

    def execute(
        self, plan_context: _compat.PlanOrchestrationContext, execution_plan: _compat.ExecutionPlan
    ) -> Iterator[_compat.DagsterEvent]:
        install_sqlite_engine_cache()  # this process writes the run's events
        run = plan_context.dagster_run
        location = location_of(plan_context.reconstructable_job.get_definition())
        mode = run_mode(run.tags, {"execution": {"config": self.config}}, self.default_mode)
        inner = self.inner(mode, location, run, plan_context.instance)
        context = _compat.with_executor(plan_context, inner)
        if location is None:  # a job without cell assets: nothing to skip
            yield from inner.execute(context, execution_plan)
            return
        wrapper = SkipCachedExecutor(inner, location, record=self.config["record_cached"])
        yield from wrapper.execute(context, execution_plan)


def _slurm_schema() -> dg.Field:
    from further_dagster.dagster.slurm_schema import spec_config_schema

    return dg.Field(
        {
            **spec_config_schema(),
            "folder": dg.Field(
                dg.Noneable(str),
                default_value=SLURM_DEFAULTS["folder"],
                description="submitit folder on a shared filesystem (default: the Slurm "
                "run launcher's, else <DAGSTER_HOME>/slurm); one subfolder per run",
            ),
            "python": dg.Field(
                dg.Noneable(str),
                default_value=SLURM_DEFAULTS["python"],
                description="interpreter for the jobs",
            ),
            "array": dg.Field(
                bool,
                default_value=SLURM_DEFAULTS["array"],
                description="submit instances that share a spec (and, in one pass, a level) as "
                "one job array (False: one sbatch per instance, one wave of ready instances at "
                "a time)",
            ),
            "check_health_interval_s": dg.Field(
                int,
                default_value=SLURM_DEFAULTS["check_health_interval_s"],
                description="seconds between Slurm state checks of a step's job "
                "(`steps: multiprocess`)",
            ),
            "poll_interval_s": dg.Field(
                float,
                default_value=SLURM_DEFAULTS["poll_interval_s"],
                description="seconds between event-log polls (`steps: multiprocess`)",
            ),
        },
        is_required=False,
        description="SLURM mode: this run's SlurmSpec layer (above the launcher defaults, "
        "below each cell's own spec) and how jobs are watched",
    )


def config_schema(default_mode: Mode) -> dict[str, Any]:
    """The one config schema of the further executor (every mode)."""
    return {
        "mode": dg.Field(
            dg.Noneable(str),
            default_value=None,
            description=(
                "INLINE, LOCAL, LOCAL_PROCESSES, DASK or SLURM (the run's ceiling); "
                f"default {default_mode.value}; the run tag further/mode wins over it"
            ),
        ),
        "inner": dg.Field(
            dg.Noneable(
                dg.Enum("FurtherInner", [dg.EnumValue("multiprocess"), dg.EnumValue("in_process")])
            ),
            default_value=None,
            description="Older spelling of `mode`: in_process = INLINE, multiprocess = LOCAL.",
        ),
        "steps": dg.Field(
            dg.Enum("FurtherSteps", [dg.EnumValue("in_process"), dg.EnumValue("multiprocess")]),
            default_value="in_process",
            description=(
                "in_process: steps run in the run's process and the run's missing instances go "
                "to the engine's pools for the mode (threads, processes, Dask) in waves across "
                "steps, or under SLURM to Slurm in one pass (job arrays chained by Slurm "
                "dependencies); multiprocess: Dagster's own executor for the mode, a process per "
                "step (SLURM: a Slurm job per step, a fanning-out step's instances as one array)."
            ),
        ),
        "max_concurrent": dg.Field(
            dg.Noneable(int),
            default_value=None,
            description="steps running at once (`steps: multiprocess`); with `steps: "
            "in_process`, the instances running at once (threads, processes or Dask workers; "
            "default: CPUs + 2; Slurm runs what its queue allows)",
        ),
        "retries": _compat.get_retries_config(),
        "record_cached": dg.Field(
            dg.Enum("FurtherRecordCached", [dg.EnumValue(c) for c in RECORD_CHOICES]),
            default_value="materialization",
            description="What a skipped (already stored) step records for its assets.",
        ),
        "slurm": _slurm_schema(),
        "dask": dg.Field(
            {"cluster": dg.Field(dg.Permissive(), is_required=False)},
            is_required=False,
            description="DASK mode: dagster-dask's `cluster` config (default: a local cluster)",
        ),
    }


def mode_executor_def(
    default_mode: str | Mode = Mode.LOCAL, *, name: str = "further"
) -> dg.ExecutorDefinition:
    """The executor of further_dagster Definitions: runs a run in its mode (see module doc)."""
    default = parse_mode(default_mode, where="mode_executor_def")

    @dg.executor(
        name=name,
        config_schema=config_schema(default),
        requirements=dg.multiple_process_executor_requirements(),
    )
    def _further_mode_executor(init_context: dg.InitExecutorContext) -> _compat.Executor:
        return ModeExecutor(init_context.executor_config, default)

    return _further_mode_executor


def further_executor_def(
    name: str = "further", *, default_inner: str = "multiprocess"
) -> dg.ExecutorDefinition:
    """The further executor in mode LOCAL (`default_inner="multiprocess"`) or INLINE
    (`"in_process"`) by default; configure `inner`, `mode` or `steps` in run config to
    change it."""
    return mode_executor_def(
        Mode.INLINE if default_inner == "in_process" else Mode.LOCAL, name=name
    )


slurm_executor = mode_executor_def(Mode.SLURM, name="further_slurm")
"""A run's missing instances as Slurm job arrays in one pass (`steps: multiprocess`: each step
as a Slurm job, a sweep as one array per step), stored steps never submitted."""

dask_executor = mode_executor_def(Mode.DASK, name="further_dask")
"""Each step on dagster-dask's executor (a local Dask cluster by default), stored steps skipped."""


__all__ = [
    "ModeExecutor",
    "config_schema",
    "dask_executor",
    "dask_inner",
    "further_executor_def",
    "mode_executor_def",
    "slurm_executor",
]
