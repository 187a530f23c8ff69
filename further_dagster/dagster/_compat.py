"""The only module that imports Dagster's private modules.

Executors, plan contexts, run launchers and step handlers are not public API; keeping every such
import here means a Dagster upgrade breaks one file, and the pin in pyproject.toml says which
version it was written against (dagster 1.13.27).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg
from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluation,
    AssetCheckEvaluationTargetMaterializationData,
)
from dagster._core.definitions.assets.graph.asset_graph_subset import AssetGraphSubset
from dagster._core.definitions.data_version import (
    CODE_VERSION_TAG,
    DATA_VERSION_IS_USER_PROVIDED_TAG,
    DATA_VERSION_TAG,
    NULL_EVENT_POINTER,
    extract_data_version_from_entry,
    get_input_data_version_tag,
    get_input_event_pointer_tag,
)
from dagster._core.definitions.events import AssetKeyPartitionKey
from dagster._core.definitions.executor_definition import (
    _core_in_process_executor_creation,
    _core_multiprocess_executor_creation,
)
from dagster._core.definitions.observe import observe
from dagster._core.events import (  # noqa: F401
    AssetObservationData,
    DagsterEvent,
    DagsterEventType,
    EngineEventData,
    StepMaterializationData,
)
from dagster._core.execution.context.system import PlanOrchestrationContext
from dagster._core.execution.plan import execute_step as _execute_step
from dagster._core.execution.plan.handle import StepHandle
from dagster._core.execution.plan.objects import StepFailureData
from dagster._core.execution.plan.plan import ExecutionPlan
from dagster._core.execution.retries import RetryMode
from dagster._core.execution.retries import get_retries_config as _get_retries_config
from dagster._core.executor.base import Executor
from dagster._core.executor.step_delegating import StepDelegatingExecutor
from dagster._core.executor.step_delegating.step_handler.base import (
    CheckStepHealthResult,
    StepHandler,
    StepHandlerContext,
)
from dagster._core.launcher import (
    CheckRunHealthResult,
    LaunchRunContext,
    RunLauncher,
    WorkerStatus,
)
from dagster._core.system_config.objects import ResolvedRunConfig
from dagster._grpc.types import ExecuteRunArgs
from dagster._serdes import ConfigurableClass, ConfigurableClassData
from dagster_shared.error import SerializableErrorInfo

__all__ = [
    "sqlite_storages",
    "asset_key_table",
    "dagster_version",
    # slurm launcher / executor / modes (issue 4)
    "CheckRunHealthResult",
    "CheckStepHealthResult",
    "ConfigurableClass",
    "ConfigurableClassData",
    "ExecuteRunArgs",
    "LaunchRunContext",
    "RunLauncher",
    "StepDelegatingExecutor",
    "StepHandler",
    "StepHandlerContext",
    "WorkerStatus",
    "dagster_cli",
    "python_entry_point",
    "run_worker_command",
    "step_command",
    "step_failure_event",
    "step_retry_count",
    "with_executor",
    # projection, executors, resources
    "CODE_VERSION_TAG",
    "DATA_VERSION_IS_USER_PROVIDED_TAG",
    "DATA_VERSION_TAG",
    "NULL_EVENT_POINTER",
    "extract_data_version_from_entry",
    "get_input_data_version_tag",
    "get_input_event_pointer_tag",
    "DagsterEvent",
    "DagsterEventType",
    "EngineEventData",
    "ExecutionPlan",
    "Executor",
    "PlanOrchestrationContext",
    "RetryMode",
    "executor_config",
    "reconstructable_asset_job",
    "get_retries_config",
    "inner_executor",
    "backfill_request",
    "log_run_event",
    "observe",
    "step_asset_keys",
    "subset_context",
    # asset checks evaluated by the skip-cached executor
    "AssetCheckEvaluation",
    "check_evaluation_event",
    "check_targets",
    "step_check_keys",
]


def get_retries_config() -> Any:
    """The `retries` config field of Dagster's own executors."""
    return _get_retries_config()


def inner_executor(kind: str, config: Mapping[str, Any]) -> Executor:
    """Dagster's own in-process or multiprocess executor, built from its config dict."""
    if kind == "in_process":
        return _core_in_process_executor_creation(dict(config))
    return _core_multiprocess_executor_creation(dict(config))


def reconstructable_asset_job(module: str, attribute: str, working_directory: str) -> Any:
    """The implicit asset job of `module.attribute` (a Definitions), reconstructable in step
    processes, as `dagster asset materialize -m module` builds it."""
    from dagster._core.definitions.reconstruct import ReconstructableRepository

    repo = ReconstructableRepository.for_module(
        module, attribute, working_directory=working_directory
    )
    return repo.get_reconstructable_job("__ASSET_JOB")


def executor_config(job_def: Any, run_config: Mapping[str, Any]) -> Mapping[str, Any]:
    """The processed executor config of a run: its run config over the executor's schema
    defaults and `configured` values (what the executor's init function receives)."""
    resolved = ResolvedRunConfig.build(job_def, dict(run_config))
    config: Mapping[str, Any] = resolved.execution.execution_engine_config or {}
    return config


def step_asset_keys(execution_plan: ExecutionPlan) -> dict[str, list[Any]]:
    """Step key -> the asset keys its outputs materialize."""
    found: dict[str, list[Any]] = {}
    for step in execution_plan.get_all_steps_in_topo_order():
        keys = []
        for output in step.step_outputs:
            props = output.properties
            if props is not None and props.asset_key is not None:
                keys.append(props.asset_key)
        found[step.key] = keys
    return found


def step_check_keys(execution_plan: ExecutionPlan) -> dict[str, list[dg.AssetCheckKey]]:
    """Step key -> the asset check keys its outputs evaluate (only steps that evaluate some)."""
    found: dict[str, list[dg.AssetCheckKey]] = {}
    for step in execution_plan.get_all_steps_in_topo_order():
        keys = [
            output.properties.asset_check_key
            for output in step.step_outputs
            if output.properties is not None and output.properties.asset_check_key is not None
        ]
        if keys:
            found[step.key] = keys
    return found


def check_evaluation_event(
    plan_context: PlanOrchestrationContext,
    step_key: str,
    check_key: dg.AssetCheckKey,
    *,
    passed: bool,
    severity: dg.AssetCheckSeverity,
    metadata: Mapping[str, Any],
    description: str | None,
    targets: Mapping[Any, Any] | None = None,
) -> DagsterEvent:
    """Record the evaluation of an asset check for a check step that is not started, targeting
    the asset's latest materialization (as a check step's own evaluation does); `targets`
    (from `check_targets`, one query for many checks) saves the lookup."""
    if targets is None:
        targets = check_targets(plan_context.instance, [check_key.asset_key])
    target = targets.get(check_key.asset_key)
    evaluation = AssetCheckEvaluation(
        asset_key=check_key.asset_key,
        check_name=check_key.name,
        passed=passed,
        metadata=dict(metadata),
        target_materialization_data=target,
        severity=severity,
        description=description,
        blocking=False,
    )
    return DagsterEvent.from_job(
        DagsterEventType.ASSET_CHECK_EVALUATION,
        plan_context,
        f"Asset check '{check_key.name}' on '{check_key.asset_key.to_user_string()}' "
        + ("passed" if passed else "did not pass")
        + " (evaluated by the skip-cached executor; the step was not started)."
        + ("" if description is None else f" Description: '{description}'"),
        event_specific_data=evaluation,
        step_handle=_step_handle(step_key),
    )


def check_targets(
    instance: Any,
    asset_keys: Sequence[dg.AssetKey],
    recorded: Mapping[dg.AssetKey, tuple[int, Any]] | None = None,
) -> dict[dg.AssetKey, Any]:
    """Asset key -> its latest materialization as an asset check's target, in one query;
    `recorded` (asset key -> (storage id, event log entry) of the latest materializations
    written in the open event batch, see dagster/sqlite_events.py) answers for those assets
    without reading (and deserializing) their records back."""
    found: dict[dg.AssetKey, Any] = {}
    rest = []
    for key in asset_keys:
        if recorded is not None and key in recorded:
            storage_id, entry = recorded[key]
            found[key] = AssetCheckEvaluationTargetMaterializationData(
                storage_id=storage_id, run_id=entry.run_id, timestamp=entry.timestamp
            )
        else:
            rest.append(key)
    if not rest:
        return found
    for record in instance.get_asset_records(rest):
        latest = record.asset_entry.last_materialization_record
        if latest is not None:
            found[record.asset_entry.asset_key] = AssetCheckEvaluationTargetMaterializationData(
                storage_id=latest.storage_id,
                run_id=latest.event_log_entry.run_id,
                timestamp=latest.event_log_entry.timestamp,
            )
    return found


def subset_context(
    plan_context: PlanOrchestrationContext,
    execution_plan: ExecutionPlan,
    step_keys: Sequence[str],
    executor: Executor,
) -> tuple[PlanOrchestrationContext, ExecutionPlan]:
    """A plan context that runs only `step_keys`, for the inner executor."""
    job_def = plan_context.reconstructable_job.get_definition()
    resolved = ResolvedRunConfig.build(job_def, plan_context.dagster_run.run_config)
    subset = execution_plan.build_subset_plan(list(step_keys), job_def, resolved)
    plan_data = plan_context.plan_data._replace(execution_plan=subset)
    context = PlanOrchestrationContext(
        plan_data=plan_data,
        log_manager=plan_context.log,
        executor=executor,
        output_capture=plan_context.output_capture,
        resume_from_failure=plan_context.resume_from_failure,
    )
    return context, subset


def log_run_event(
    plan_context: PlanOrchestrationContext,
    kind: str,
    payload: Any,
    step_key: str | None,
    message: str,
) -> DagsterEvent:
    """Record an asset materialization / observation for a step that did not run, or an
    engine event, in the run's event log."""
    event_type = {
        "materialization": DagsterEventType.ASSET_MATERIALIZATION,
        "observation": DagsterEventType.ASSET_OBSERVATION,
        "engine": DagsterEventType.ENGINE_EVENT,
    }[kind]
    data: Any
    if kind == "materialization":
        data = StepMaterializationData(payload)
    elif kind == "observation":
        data = AssetObservationData(payload)
    else:
        data = payload
    return DagsterEvent.from_job(
        event_type,
        plan_context,
        message,
        event_specific_data=data,
        step_handle=_step_handle(step_key),
    )


def _step_handle(step_key: str | None) -> StepHandle | None:
    if step_key is None:
        return None
    handle = StepHandle.parse_from_key(step_key)
    return handle if isinstance(handle, StepHandle) else None


def backfill_request(
    asset_graph: Any, pairs: Sequence[tuple[Any, str | None]], tags: Mapping[str, str]
) -> dg.RunRequest:
    """A sensor RunRequest that launches a backfill of exactly these (asset key, partition key)
    pairs (the way to request several partitions definitions at once)."""
    subset = AssetGraphSubset.from_asset_partition_set(
        {AssetKeyPartitionKey(key, pk) for key, pk in pairs}, asset_graph
    )
    return dg.RunRequest.for_asset_graph_subset(subset, tags=dict(tags))


# --- Slurm run launcher, Slurm step handler, mode executor --------------------------------


def with_executor(
    plan_context: PlanOrchestrationContext, executor: Executor
) -> PlanOrchestrationContext:
    """The same plan context, naming `executor` as the one executing it (dagster-dask checks)."""
    return PlanOrchestrationContext(
        plan_data=plan_context.plan_data,
        log_manager=plan_context.log,
        executor=executor,
        output_capture=plan_context.output_capture,
        resume_from_failure=plan_context.resume_from_failure,
    )


def run_worker_command(run: Any, instance: Any, module: str = "dagster") -> list[str]:
    """`python -m <module> api execute_run <args>` for `run`, exiting non-zero when the run
    fails (`module`: dagster's CLI, or a wrapper such as `further_dagster.dagster.worker`)."""
    args = ExecuteRunArgs(
        job_origin=run.job_code_origin,
        run_id=run.run_id,
        instance_ref=instance.get_ref(),
        set_exit_code_on_failure=True,
    )
    argv = python_entry_point(list(args.get_command_args()), run.job_code_origin)
    if module != "dagster":
        argv[argv.index("dagster")] = module
    return argv


def python_entry_point(argv: list[str], origin: Any) -> list[str]:
    """`dagster ...` as `<the code location's python> -m dagster ...`: a job's PATH may not
    hold the virtualenv's `dagster` script, but the interpreter path is absolute."""
    if argv and argv[0] == "dagster":
        executable = getattr(origin, "executable_path", None) or sys.executable
        return [executable, "-m", "dagster", *argv[1:]]
    return argv


def step_command(step_handler_context: StepHandlerContext, module: str = "dagster") -> list[str]:
    """`python -m <module> api execute_step <args>` for the step of this context (`module`:
    dagster's CLI, or a wrapper of it such as `further_dagster.dagster.worker`)."""
    args = step_handler_context.execute_step_args
    argv = python_entry_point(list(args.get_command_args()), args.job_origin)
    if module != "dagster":
        argv[argv.index("dagster")] = module
    return argv


def dagster_cli(argv: Sequence[str], *, sigterm_interrupts: bool = True) -> None:
    """Run Dagster's CLI in this process, like `python -m dagster <argv>`.

    `sigterm_interrupts=False` keeps Dagster from turning SIGTERM into an interrupt (which a
    step reports as a STEP_FAILURE): SIGTERM is then ignored by a Python handler, so the
    process carries on until SIGKILL, and child processes still get the default SIGTERM
    action (a handler, unlike SIG_IGN or a blocked signal, does not survive exec).
    """
    import signal

    import dagster._utils.interrupts as interrupts
    from dagster._cli import cli

    if not sigterm_interrupts:

        def _ignore(_signo: int, _frame: Any) -> None:
            return None

        def _only_sigint() -> None:
            signal.signal(signal.SIGTERM, _ignore)

        interrupts.setup_interrupt_handlers = _only_sigint
        _only_sigint()
    cli.main(args=list(argv), prog_name="dagster", auto_envvar_prefix="DAGSTER_CLI")


def step_retry_count(step_handler_context: StepHandlerContext, step_key: str) -> int:
    """How many times the step was retried before this launch (0 on the first attempt)."""
    known = step_handler_context.execute_step_args.known_state
    if known is None:
        return 0
    return int(known.get_retry_state().get_attempt_count(step_key))


def step_failure_event(
    step_handler_context: StepHandlerContext, step_key: str, message: str, cls_name: str
) -> DagsterEvent:
    """Record a STEP_FAILURE for a step that could not be launched (e.g. sbatch refused it)."""
    error = SerializableErrorInfo(message=message, stack=[], cls_name=cls_name)
    return DagsterEvent.step_failure_event(
        step_context=step_handler_context.get_step_context(step_key),
        step_failure_data=StepFailureData(error=error, user_failure_data=None),
        message=f'Step "{step_key}" was not launched: {message.splitlines()[0]}',
    )


# --- per-partition data versions ---------------------------------------------------------

_DAGSTER_OUTPUT_ASSET_EVENTS = _execute_step._get_output_asset_events
_LOGIC_KEY_METADATA = "further/logic_key"  # dagster/tags.py LOGIC_KEY (no import: no cycle)


def _partition_data_version(event: Any) -> Any:
    """A cell's partition materialization with its own logic key as its data version.

    Dagster gives every partition of a multi-partition step one data version; a cell step
    knows each partition's logic key (the step's per-partition metadata carries it), so the
    partition records that instead, as a user-provided version (what Dagster's staleness
    compares). Events of other assets pass unchanged.
    """
    if not isinstance(event, dg.AssetMaterialization) or event.partition is None:
        return event
    found = event.metadata.get(_LOGIC_KEY_METADATA)
    key = getattr(found, "value", found)
    own = event.tags or {}
    if not isinstance(key, str) or own.get(DATA_VERSION_TAG) == key:
        return event
    tags = {**own, DATA_VERSION_TAG: key, DATA_VERSION_IS_USER_PROVIDED_TAG: "true"}
    return dg.AssetMaterialization(
        asset_key=event.asset_key,
        partition=event.partition,
        metadata=event.metadata,
        tags=tags,
        description=event.description,
    )


def _output_asset_events(*args: Any, **kwargs: Any) -> Any:
    for event in _DAGSTER_OUTPUT_ASSET_EVENTS(*args, **kwargs):
        yield _partition_data_version(event)


# Installed when the dagster layer is imported: every process that runs a cell step does.
_execute_step._get_output_asset_events = _output_asset_events


def code_working_directory(plan_context: PlanOrchestrationContext) -> str | None:
    """The working directory the run's code location was loaded from (`-d`, or the current
    directory of `dagster ... -m`), if its code pointer names one. Dagster puts it on sys.path
    only while it loads the code, so a spawned process could not import the cells' module."""
    pointer = getattr(plan_context.reconstructable_job.repository, "pointer", None)
    found = getattr(pointer, "working_directory", None)
    return found if isinstance(found, str) and found else None


# --- SQLite storages (sqlite_events.py patches them) ----------------------------------


def sqlite_storages() -> tuple[Any, Any, str, int]:
    """Dagster's SQLite event-log and run storage classes, the index shard's name and the busy
    timeout, imported when asked for (importing them costs a code-location load ~0.5 s)."""
    from dagster._core.storage.event_log.sqlite.sqlite_event_log import (
        INDEX_SHARD_NAME,
        SqliteEventLogStorage,
    )
    from dagster._core.storage.runs.sqlite.sqlite_run_storage import SqliteRunStorage
    from dagster._core.storage.sqlite import SQLITE_BUSY_TIMEOUT_SECONDS

    return SqliteEventLogStorage, SqliteRunStorage, INDEX_SHARD_NAME, SQLITE_BUSY_TIMEOUT_SECONDS


def dagster_version() -> str:
    """The installed Dagster's version (its storage schema is that version's)."""
    from dagster.version import __version__

    return str(__version__)


def asset_key_table() -> Any:
    """Dagster's `asset_keys` table (SQLAlchemy), one row per asset: its latest events."""
    from dagster._core.storage.event_log.schema import AssetKeyTable

    return AssetKeyTable


_SQLITE_STORAGES = (
    "dagster._core.storage.event_log.sqlite.sqlite_event_log",
    "dagster._core.storage.runs.sqlite.sqlite_run_storage",
)

if all(name in sys.modules for name in _SQLITE_STORAGES):
    # already loaded (this process opened a SQLite instance): patch them now, before the run
    # is created (its planned events are the first batch)
    from further_dagster.dagster.sqlite_events import install_sqlite_engine_cache

    install_sqlite_engine_cache()
