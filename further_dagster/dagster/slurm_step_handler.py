"""The Slurm step executor: Dagster's step-delegating executor with a Slurm `StepHandler`.

A SLURM run uses it with `steps: multiprocess`; by default (`steps: in_process`) the steps run
in the run's process and the run's missing instances go to Slurm in one pass (dagster/waves.py,
with `wave_settings` below). With the step handler:

Every step that is not stored (the `SkipCachedExecutor` around this one drops those before any
submission) goes one of two ways, decided when it is launched (`route`):

- **one Slurm job** (`dagster api execute_step` in the job): a step with at most one missing
  instance of a cell whose effective mode is SLURM. The job asks for the merged spec
  launcher defaults < executor run config < the cell's `slurm`, with fallbacks tried in order
  when sbatch refuses. The step worker writes its events straight into instance storage and
  computes the instance inline.
- **a local step process that submits ONE job array**: a step with several missing instances
  (a sweep's partition range; Definitions use single-run backfills) runs next to the run
  worker and hands the missing instances to the engine's SLURM backend, which submits them in
  one pass (one array per level and spec, chained by `--dependency`; engine/backends/slurm.py)
  and waits. Array tasks import the cells' modules, never the code location, so never dagster.
  A cell whose effective mode is INLINE (`in_parallel=False`, or `mode =
  "INLINE"`) also runs its step here: it is not worth a Slurm job.

The route is written to the run's tags (`further/slurm_route/<step>`) before the launch; the
step process reads it there (dagster/run_config.py `step_mode`) and derives its Slurm settings
from the same run config and instance as this handler (`fanout_settings`): nothing travels
through environment variables. The handler keeps no state that matters: a job's identity is run
id + step key + retry number (its job name), and its id is in the run's tags
(`further/slurm_step/<step key>`, arrays in `further/slurm_array/<step key>`), so a restarted
run worker or the launcher's terminate can find and cancel it; a local step process is tagged
`local:<pid>@<host>` there instead.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg

from further_dagster.core.cell import Cell
from further_dagster.dagster import _compat
from further_dagster.dagster import tags as T
from further_dagster.dagster.location import Location
from further_dagster.dagster.run_config import (
    ROUTE_JOB,
    ROUTE_LOCAL,
    SlurmLayer,
    resolved_executor_config,
    run_freshness,
    run_partition_keys,
    slurm_layer,
)
from further_dagster.dagster.specs_config import op_config
from further_dagster.dagster.worker import MODULE as WORKER_MODULE
from further_dagster.engine.backends.slurm import SlurmSettings, Submission, cell_spec, spec_json
from further_dagster.engine.modes import Mode, effective_mode
from further_dagster.errors import FurtherError, SlurmSubmissionError
from further_dagster.slurm import SlurmSpec, merge, states
from further_dagster.slurm.client import SlurmClient, SubmititClient, describe_job_end
from further_dagster.slurm.command import run_command

__all__ = [
    "SlurmStepHandler",
    "StepRoute",
    "fanout_settings",
    "record_submission",
    "wave_settings",
]

log = logging.getLogger("further")

# Local step processes started by this process, for reaping (identity lives in the run tags).
_LOCAL: dict[int, subprocess.Popen[bytes]] = {}


@dataclass(frozen=True)
class StepRoute:
    """How one step is launched: `kind` "job" (one Slurm job) or "local" (next to the run
    worker, submitting job arrays), with its merged spec."""

    kind: str
    spec: SlurmSpec
    missing: int
    reason: str


def route_for(cell: type[Cell] | None, missing: int, base: SlurmSpec) -> StepRoute:
    """Where a step of `cell` with `missing` instances to compute runs (see module docstring)."""
    if cell is None:
        return StepRoute(ROUTE_JOB, base, missing, "not a cell step")
    spec = merge(base, cell_spec(cell))
    mode = effective_mode(Mode.SLURM, cell.mode, in_parallel=cell.in_parallel, where=cell.full_name)
    if mode is not Mode.SLURM:
        return StepRoute(ROUTE_LOCAL, spec, missing, f"cell mode {mode.value}")
    if missing >= 2:
        return StepRoute(ROUTE_LOCAL, spec, missing, f"{missing} missing instances: one job array")
    return StepRoute(ROUTE_JOB, spec, missing, "one Slurm job")


class SlurmStepHandler(_compat.StepHandler):
    """Launches each step as a Slurm job, or locally when it fans out (see module docstring).

    Args:
        location: the code location of the run (None: a job without cell assets; every step
            is then one Slurm job).
        executor_config: the further executor's processed config (its `slurm` layer).
        client: who talks to Slurm (default `SubmititClient()`).
    """

    def __init__(
        self,
        location: Location | None,
        executor_config: Mapping[str, Any],
        *,
        client: SlurmClient | None = None,
    ) -> None:
        self.location = location
        self.executor_config = dict(executor_config)
        self.client: SlurmClient = client or SubmititClient()

    @property
    def name(self) -> str:
        return "SlurmStepHandler"

    def layer(self, ctx: _compat.StepHandlerContext) -> SlurmLayer:
        return slurm_layer(ctx.instance, ctx.execute_step_args.run_id, self.executor_config)

    # --- routing ------------------------------------------------------------------------

    def step_plan(
        self, ctx: _compat.StepHandlerContext, step_key: str
    ) -> tuple[type[Cell] | None, int]:
        """The cell of a cell step and how many instances it will compute (None, 0 for other
        steps), by the run's partitions and freshness: what the step itself will do."""
        location = self.location
        if location is None:
            return None, 0
        step = ctx.get_step_context(step_key).step
        keys = [
            o.properties.asset_key
            for o in step.step_outputs
            if o.properties is not None and o.properties.asset_key in location.asset_by_key
        ]
        if not keys:
            return None, 0
        run = ctx.dagster_run
        releases = None
        if location.has_resources:
            releases = location.release_resolver(run_freshness(location, run.tags, run.run_config))
        partitions = {k: run_partition_keys(run.tags, location.asset_by_key[k]) for k in keys}
        given = op_config(run.run_config, step_key)
        planned = location.step_instances(
            partitions,
            location.actual_instances(resolver=releases),
            config={k: given for k in keys} if given else None,
            releases=releases,
            tags=run.tags,
        )
        return location.asset_by_key[keys[0]].cell, len(planned.missing)

    def route(self, ctx: _compat.StepHandlerContext, step_key: str, base: SlurmSpec) -> StepRoute:
        """Where `step_key` runs, and with which spec."""
        try:
            cell, missing = self.step_plan(ctx, step_key)
        except (FurtherError, dg.DagsterError, KeyError) as exc:  # decided in the step instead
            log.warning("could not plan step %s (%s); submitting it as one job", step_key, exc)
            cell, missing = None, 0
        return route_for(cell, missing, base)

    # --- StepHandler ----------------------------------------------------------------------

    def launch_step(
        self, step_handler_context: _compat.StepHandlerContext
    ) -> Iterator[_compat.DagsterEvent]:
        ctx = step_handler_context
        step_key = _step_key(ctx)
        run_id = ctx.execute_step_args.run_id
        layer = self.layer(ctx)
        route = self.route(ctx, step_key, layer.base)
        ctx.instance.add_run_tags(run_id, {T.ROUTE_TAG_PREFIX + step_key: route.kind})
        if route.kind == ROUTE_LOCAL:
            yield from self._launch_local(ctx, step_key, layer, route)
        else:
            yield from self._launch_job(ctx, step_key, layer, route)

    def _launch_job(
        self,
        ctx: _compat.StepHandlerContext,
        step_key: str,
        layer: SlurmLayer,
        route: StepRoute,
    ) -> Iterator[_compat.DagsterEvent]:
        run_id = ctx.execute_step_args.run_id
        retry = _compat.step_retry_count(ctx, step_key)
        argv = _compat.step_command(ctx, module=WORKER_MODULE)
        job_name = f"dagster-{run_id[:8]}-{step_key}-{retry}"
        started = time.perf_counter()
        try:
            job = self.client.submit(
                layer.folder / "steps",
                route.spec,
                run_command,
                argv,
                None,
                cwd=os.getcwd(),
                job_name=job_name,
                python=layer.python,
            )
        except SlurmSubmissionError as exc:
            yield _compat.step_failure_event(ctx, step_key, str(exc), "SlurmSubmissionError")
            return
        ctx.instance.add_run_tags(run_id, {T.STEP_TAG_PREFIX + step_key: job.job_id})
        yield _compat.DagsterEvent.engine_event(
            ctx.get_step_context(step_key),
            f"Submitted step {step_key} as Slurm job {job.job_id} ({_describe(route.spec)}) "
            f"in {time.perf_counter() - started:.2f}s",
            _compat.EngineEventData(
                metadata={
                    "Slurm job id": job.job_id,
                    "job name": job_name,
                    "spec": dg.MetadataValue.json(spec_json(route.spec)),
                    "stdout": dg.MetadataValue.path(str(job.stdout)),
                    "stderr": dg.MetadataValue.path(str(job.stderr)),
                }
            ),
        )

    def _launch_local(
        self,
        ctx: _compat.StepHandlerContext,
        step_key: str,
        layer: SlurmLayer,
        route: StepRoute,
    ) -> Iterator[_compat.DagsterEvent]:
        retry = _compat.step_retry_count(ctx, step_key)
        argv = _compat.step_command(ctx)
        log_dir = layer.folder / "local"
        log_dir.mkdir(parents=True, exist_ok=True)
        log_path = log_dir / f"{step_key}-{retry}.log"
        with open(log_path, "ab") as log_file:
            process = subprocess.Popen(
                argv, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
            )
        _LOCAL[process.pid] = process
        where = f"{process.pid}@{socket.gethostname()}"
        ctx.instance.add_run_tags(
            ctx.execute_step_args.run_id, {T.STEP_TAG_PREFIX + step_key: T.LOCAL_PREFIX + where}
        )
        yield _compat.DagsterEvent.engine_event(
            ctx.get_step_context(step_key),
            f"Running step {step_key} next to the run worker (process {where}): {route.reason}",
            _compat.EngineEventData(
                metadata={
                    "pid": str(process.pid),
                    "log": dg.MetadataValue.path(str(log_path)),
                    "missing instances": route.missing,
                    "array folder": dg.MetadataValue.path(str(array_folder(layer, step_key))),
                }
            ),
        )

    def _tags(self, ctx: _compat.StepHandlerContext) -> Mapping[str, str]:
        run = ctx.instance.get_run_by_id(ctx.execute_step_args.run_id)
        return dict(run.tags) if run is not None else {}

    def check_step_health(
        self, step_handler_context: _compat.StepHandlerContext
    ) -> _compat.CheckStepHealthResult:
        ctx = step_handler_context
        step_key = _step_key(ctx)
        job_id = self._tags(ctx).get(T.STEP_TAG_PREFIX + step_key)
        if job_id is None:
            return _compat.CheckStepHealthResult.healthy()
        if job_id.startswith(T.LOCAL_PREFIX):
            return _local_health(job_id.removeprefix(T.LOCAL_PREFIX))
        state = self.client.state(job_id)
        if states.is_live(state) or state == "COMPLETED":
            return _compat.CheckStepHealthResult.healthy()
        folder = self.layer(ctx).folder / "steps"
        return _compat.CheckStepHealthResult.unhealthy(
            describe_job_end(self.client, job_id, state, folder, what=f"step {step_key}")
        )

    def terminate_step(
        self, step_handler_context: _compat.StepHandlerContext
    ) -> Iterator[_compat.DagsterEvent]:
        ctx = step_handler_context
        step_key = _step_key(ctx)
        job_id = self._tags(ctx).get(T.STEP_TAG_PREFIX + step_key)
        stopped: list[str] = []
        if job_id is not None and not job_id.startswith(T.LOCAL_PREFIX):
            self.client.cancel(job_id)
            stopped.append(f"Slurm job {job_id}")
        if job_id is not None and job_id.startswith(T.LOCAL_PREFIX):
            pid = _local_pid(job_id.removeprefix(T.LOCAL_PREFIX))
            if pid is not None:
                try:  # SIGTERM: the step is interrupted and its engine cancels its arrays
                    os.killpg(pid, signal.SIGTERM)
                    stopped.append(f"local process {pid}")
                except ProcessLookupError:
                    pass
        yield _compat.DagsterEvent.engine_event(
            ctx.get_step_context(step_key),
            f"Stopping step {step_key}: {', '.join(stopped) or 'nothing was running'}",
            _compat.EngineEventData(),
        )


def _step_key(ctx: _compat.StepHandlerContext) -> str:
    """The one step a step handler call is about (the step-delegating executor sends one)."""
    (step_key,) = ctx.execute_step_args.step_keys_to_execute or ()
    return step_key


def array_folder(layer: SlurmLayer, step_key: str) -> Path:
    """Where a fan-out step's job arrays are submitted."""
    return layer.folder / "arrays" / step_key


def record_submission(instance: Any, run_id: str, tags_of: Mapping[str, list[str]]) -> list[str]:
    """Add each step's new job ids (`tags_of`: step key -> job ids, array tasks `<id>_<i>`)
    to its run tag `further/slurm_array/<step key>` as parent ids, where terminate and a
    restarted daemon find them; the parent ids added, in order."""
    current = instance.get_run_by_id(run_id)
    tags = dict(current.tags) if current is not None else {}
    added: dict[str, str] = {}
    new: list[str] = []
    for step_key, job_ids in tags_of.items():
        tag = T.ARRAY_TAG_PREFIX + step_key
        known = [i for i in (tags.get(tag) or "").split(",") if i]
        parents = sorted({j.split("_")[0] for j in job_ids} - set(known))
        if parents:
            added[tag] = ",".join([*known, *parents])
            new.extend(p for p in parents if p not in new)
    if added:
        instance.add_run_tags(run_id, added)
    return new


def fanout_settings(context: dg.AssetExecutionContext, location: Location) -> SlurmSettings:
    """The engine's Slurm settings inside a fan-out step: the same layer as the handler that
    launched it (run config + instance), the location's client; each submission is logged to
    the step's event log and its job ids are recorded in the run's tags
    (`further/slurm_array/<step key>`), where terminate and a restarted daemon find them."""
    instance, run = context.instance, context.run
    step_key = context.get_step_execution_context().step.key
    config = resolved_executor_config(context.job_def, run.run_config)
    layer = slurm_layer(instance, run.run_id, config)

    def record(submission: Submission) -> None:
        parents = record_submission(instance, run.run_id, {step_key: submission.job_ids})
        kind = "one job array" if submission.array else "one job"
        context.log.info(
            f"further: submitted {len(submission.job_ids)} instance(s) of {submission.cell} to "
            f"Slurm as {kind} {', '.join(parents)} in {submission.seconds:.3f}s"
        )

    return SlurmSettings(
        folder=array_folder(layer, step_key),
        base=layer.base,
        array=layer.array,
        python=layer.python,
        on_submit=record,
        client=location.slurm_client,
    )


def wave_settings(
    instance: Any, run_id: str, config: Mapping[str, Any], location: Location
) -> SlurmSettings:
    """The engine's Slurm settings for a whole run's wave (dagster/waves.py): the same layer as
    the step handler's (launcher defaults < executor run config, under each cell's own spec),
    one folder per run (`<folder>/<run id>/waves`), the location's client (the real one when
    it names none, so that the executor can cancel what the pool submitted). The wave executor
    adds `on_submit` (it knows which step owns which instance)."""
    layer = slurm_layer(instance, run_id, config)
    return SlurmSettings(
        folder=layer.folder / "waves",
        base=layer.base,
        array=layer.array,
        python=layer.python,
        client=location.slurm_client or SubmititClient(),
    )


def _local_pid(where: str) -> int | None:
    pid, _, host = where.partition("@")
    if host and host != socket.gethostname():
        return None
    try:
        return int(pid)
    except ValueError:
        return None


def _local_health(where: str) -> _compat.CheckStepHealthResult:
    pid = _local_pid(where)
    if pid is None:  # another host: nothing to check from here
        return _compat.CheckStepHealthResult.healthy()
    process = _LOCAL.get(pid)
    if process is not None:
        code = process.poll()
        if code is None or code == 0:
            return _compat.CheckStepHealthResult.healthy()
        return _compat.CheckStepHealthResult.unhealthy(
            f"the local step process {pid} exited with code {code}; see its log under the "
            "run's Slurm folder (local/)"
        )
    if Path(f"/proc/{pid}").exists():
        return _compat.CheckStepHealthResult.healthy()
    return _compat.CheckStepHealthResult.unhealthy(f"the local step process {pid} is gone")


def _describe(spec: SlurmSpec) -> str:
    parts = [f"partition={spec.partition or '(default)'}", f"cpus={spec.cpus}"]
    if spec.gpus:
        parts.append(f"gpus={spec.gpus}")
    if spec.mem_gb is not None:
        parts.append(f"mem_gb={spec.mem_gb}")
    parts.append(f"time_min={spec.time_min}")
    return ", ".join(parts)
