"""The Slurm step executor: Dagster's step-delegating executor with a Slurm `StepHandler`.

Every step that is not stored (the `SkipCachedExecutor` around this one drops those before any
submission) goes one of two ways, decided when it is launched:

- **one Slurm job** (`dagster api execute_step` in the job): a step with at most one missing
  instance of a cell whose effective mode is SLURM. The job asks for the merged spec
  launcher defaults < executor run config < the cell's `slurm`, with fallbacks tried in order
  when sbatch refuses. The step worker writes its events straight into instance storage and
  computes the instance inline (`FURTHER_STEP_MODE=INLINE`).
- **a local step process that submits ONE job array**: a step with several missing instances
  (a sweep's partition range; Definitions use single-run backfills) runs next to the run
  worker and hands the missing instances to the engine's SLURM mode, which submits those that
  are ready together as one array of `compute.ensure` tasks, and waits. Array tasks never
  import dagster. A cell whose effective mode is INLINE (`in_parallel=False`, or `mode =
  "INLINE"`) also runs its step here: it is not worth a Slurm job.

The handler keeps no state that matters: a job's identity is run id + step key + retry number
(its job name), and its id is in the run's tags (`further/slurm_step/<step key>`, arrays in
`further/slurm_array/<step key>`), so a restarted run worker or the launcher's terminate can
find and cancel it; a local step process is tagged `local:<pid>@<host>` there instead.
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

from further_dagster.core.instances import Instance, walk
from further_dagster.dagster import _compat
from further_dagster.dagster.registry import TOKEN_TAG, compiled_for
from further_dagster.dagster.slurm_config import (
    LIVE_STATES,
    LOCAL_PREFIX,
    STEP_TAG_PREFIX,
    default_folder,
    describe_job_end,
)
from further_dagster.dagster.step_modes import STEP_MODE_ENV
from further_dagster.dagster.worker import MODULE as WORKER_MODULE
from further_dagster.engine.compute import is_stored
from further_dagster.engine.modes import Mode, effective_mode
from further_dagster.engine.backends.slurm import SlurmSettings, cell_spec, spec_json
from further_dagster.errors import FurtherError, SlurmSubmissionError
from further_dagster.slurm import SlurmSpec, cancel, merge, slurm_state, submit_with_fallbacks
from further_dagster.slurm.command import run_command
from further_dagster.store import ArtifactStore

__all__ = ["SlurmStepHandler", "StepRoute", "launcher_layer"]

log = logging.getLogger("further")


# Local step processes started by this process, for reaping (identity lives in the run tags).
_LOCAL: dict[int, subprocess.Popen[bytes]] = {}


def launcher_layer(instance: Any) -> tuple[SlurmSpec, str | None]:
    """The instance's Slurm run launcher defaults and folder (lowest layer), if it has one."""
    launcher = getattr(instance, "run_launcher", None)
    defaults = getattr(launcher, "defaults", None)
    folder = getattr(launcher, "folder", None)
    return (defaults if isinstance(defaults, SlurmSpec) else SlurmSpec()), folder


@dataclass(frozen=True)
class StepRoute:
    """How one step is launched: `kind` "slurm" (one job) or "local" (next to the run worker)."""

    kind: str
    spec: SlurmSpec
    missing: int
    reason: str


class SlurmStepHandler(_compat.StepHandler):
    """Launches each step as a Slurm job, or locally when it fans out (see module docstring).

    Args:
        executor_spec: the executor run config's SlurmSpec layer.
        folder: submitit folder root (default: the launcher's, else `<DAGSTER_HOME>/slurm`);
            each run gets `<folder>/<run id>/`.
        python: interpreter command for the jobs (default: this process's).
        array: the engine submits a fan-out step's instances as one job array (False: one
            sbatch per instance, the bench baseline).
        store_root: the artifact store (default FURTHER_ROOT / ./.further).
    """

    def __init__(
        self,
        executor_spec: SlurmSpec | None = None,
        *,
        folder: str | None = None,
        python: str | None = None,
        array: bool = True,
        store_root: str | None = None,
    ) -> None:
        self.executor_spec = executor_spec or SlurmSpec()
        self.folder = folder
        self.python = python
        self.array = array
        self.store_root = store_root

    @property
    def name(self) -> str:
        return "SlurmStepHandler"

    # --- routing ------------------------------------------------------------------------

    def _base(self, ctx: Any) -> tuple[SlurmSpec, Path]:
        defaults, launcher_folder = launcher_layer(ctx.instance)
        root = self.folder or launcher_folder
        folder = Path(root) if root else default_folder(ctx.instance)
        return merge(defaults, self.executor_spec), folder / ctx.execute_step_args.run_id

    def _step_instances(self, ctx: Any, step_key: str) -> tuple[type | None, list[Instance]]:
        """The cell of a cell step and the instances it will compute (None for other steps)."""
        tags = ctx.step_tags.get(step_key, {})
        if TOKEN_TAG not in tags:
            return None, []
        from further_dagster.dagster.executor import run_partition_keys

        step = ctx.get_step_context(step_key).step
        run_tags = dict(ctx.dagster_run.tags)
        cell: type | None = None
        mine: list[Instance] = []
        for output in step.step_outputs:
            asset_key = output.properties.asset_key if output.properties else None
            if asset_key is None:
                continue
            compiled = compiled_for(asset_key, tags)
            cell = compiled.asset_by_key[asset_key].cell
            pks = run_partition_keys(run_tags, compiled, asset_key)
            by_pk = compiled.instances_for(asset_key, pks)
            mine.extend(i for group in by_pk.values() for i in group)
        store = ArtifactStore(self.store_root)
        return cell, [i for i in walk(mine) if not is_stored(store, i)]

    def route(self, ctx: Any, step_key: str, base: SlurmSpec) -> StepRoute:
        """Where `step_key` runs, and with which spec."""
        try:
            cell, missing = self._step_instances(ctx, step_key)
        except (FurtherError, dg.DagsterError, KeyError) as exc:  # decided in the step instead
            log.warning("could not plan step %s (%s); submitting it as one job", step_key, exc)
            cell, missing = None, []
        if cell is None:
            return StepRoute("slurm", base, len(missing), "not a cell step")
        spec = merge(base, cell_spec(cell))
        mode = effective_mode(
            Mode.SLURM,
            getattr(cell, "mode", None),
            in_parallel=getattr(cell, "in_parallel", True),
            where=getattr(cell, "full_name", step_key),
        )
        if mode is not Mode.SLURM:
            return StepRoute("local", spec, len(missing), f"cell mode {mode.value}")
        if len(missing) >= 2:
            return StepRoute(
                "local", spec, len(missing), f"{len(missing)} missing instances: one job array"
            )
        return StepRoute("slurm", spec, len(missing), "one Slurm job")

    # --- StepHandler ----------------------------------------------------------------------

    def launch_step(self, step_handler_context: Any) -> Iterator[Any]:
        ctx = step_handler_context
        (step_key,) = ctx.execute_step_args.step_keys_to_execute
        run_id = ctx.execute_step_args.run_id
        retry = _compat.step_retry_count(ctx, step_key)
        base, folder = self._base(ctx)
        route = self.route(ctx, step_key, base)
        if route.kind == "local":
            argv = _compat.step_command(ctx)
            yield from self._launch_local(ctx, step_key, retry, argv, base, folder, route)
            return
        argv = _compat.step_command(ctx, module=WORKER_MODULE)
        job_name = f"dagster-{run_id[:8]}-{step_key}-{retry}"
        started = time.perf_counter()
        try:
            job = submit_with_fallbacks(
                folder / "steps",
                route.spec,
                run_command,
                argv,
                {STEP_MODE_ENV: Mode.INLINE.value},
                cwd=os.getcwd(),
                job_name=job_name,
                python=self.python,
            )
        except SlurmSubmissionError as exc:
            yield _compat.step_failure_event(ctx, step_key, str(exc), "SlurmSubmissionError")
            return
        ctx.instance.add_run_tags(run_id, {f"{STEP_TAG_PREFIX}{step_key}": str(job.job_id)})
        yield _compat.DagsterEvent.engine_event(
            ctx.get_step_context(step_key),
            f"Submitted step {step_key} as Slurm job {job.job_id} ({_describe(route.spec)}) "
            f"in {time.perf_counter() - started:.2f}s",
            _compat.EngineEventData(
                metadata={
                    "Slurm job id": str(job.job_id),
                    "job name": job_name,
                    "spec": dg.MetadataValue.json(spec_json(route.spec)),
                    "stdout": dg.MetadataValue.path(str(job.paths.stdout)),
                    "stderr": dg.MetadataValue.path(str(job.paths.stderr)),
                }
            ),
        )

    def _launch_local(
        self,
        ctx: Any,
        step_key: str,
        retry: int,
        argv: list[str],
        base: SlurmSpec,
        folder: Path,
        route: StepRoute,
    ) -> Iterator[Any]:
        settings = SlurmSettings(folder=folder / "arrays" / step_key, base=base, array=self.array)
        env = {**os.environ, **settings.env(), STEP_MODE_ENV: Mode.SLURM.value}
        log_dir = folder / "local"
        log_dir.mkdir(parents=True, exist_ok=True)
        log_path = log_dir / f"{step_key}-{retry}.log"
        with open(log_path, "ab") as log_file:
            process = subprocess.Popen(
                argv, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
            )
        _LOCAL[process.pid] = process
        where = f"{process.pid}@{socket.gethostname()}"
        ctx.instance.add_run_tags(
            ctx.execute_step_args.run_id, {f"{STEP_TAG_PREFIX}{step_key}": LOCAL_PREFIX + where}
        )
        yield _compat.DagsterEvent.engine_event(
            ctx.get_step_context(step_key),
            f"Running step {step_key} next to the run worker (process {where}): {route.reason}",
            _compat.EngineEventData(
                metadata={
                    "pid": str(process.pid),
                    "log": dg.MetadataValue.path(str(log_path)),
                    "missing instances": route.missing,
                    "array folder": dg.MetadataValue.path(str(settings.folder)),
                }
            ),
        )

    def _tags(self, ctx: Any) -> Mapping[str, str]:
        run = ctx.instance.get_run_by_id(ctx.execute_step_args.run_id)
        return dict(run.tags) if run is not None else {}

    def check_step_health(self, step_handler_context: Any) -> Any:
        ctx = step_handler_context
        (step_key,) = ctx.execute_step_args.step_keys_to_execute
        job_id = self._tags(ctx).get(f"{STEP_TAG_PREFIX}{step_key}")
        if job_id is None:
            return _compat.CheckStepHealthResult.healthy()
        if job_id.startswith(LOCAL_PREFIX):
            return _local_health(job_id.removeprefix(LOCAL_PREFIX))
        state = slurm_state(job_id)
        if state in LIVE_STATES or state == "COMPLETED":
            return _compat.CheckStepHealthResult.healthy()
        _, folder = self._base(ctx)
        return _compat.CheckStepHealthResult.unhealthy(
            describe_job_end(job_id, state, folder / "steps", what=f"step {step_key}")
        )

    def terminate_step(self, step_handler_context: Any) -> Iterator[Any]:
        ctx = step_handler_context
        (step_key,) = ctx.execute_step_args.step_keys_to_execute
        tags = self._tags(ctx)
        stopped: list[str] = []
        job_id = tags.get(f"{STEP_TAG_PREFIX}{step_key}")
        if job_id is not None and not job_id.startswith(LOCAL_PREFIX):
            cancel(job_id)
            stopped.append(f"Slurm job {job_id}")
        if job_id is not None and job_id.startswith(LOCAL_PREFIX):
            pid = _local_pid(job_id.removeprefix(LOCAL_PREFIX))
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


def _local_pid(where: str) -> int | None:
    pid, _, host = where.partition("@")
    if host and host != socket.gethostname():
        return None
    try:
        return int(pid)
    except ValueError:
        return None


def _local_health(where: str) -> Any:
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
