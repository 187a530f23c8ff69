"""A wrapper around any executor that never starts a step whose instances are all stored.

Dagster never skips work by itself. Because a logic key depends only on Specs, releases and
upstream keys, the keys of every step of a run are known before the run starts, so this wrapper
decides up front (by engine/plan.py's rule, the same one the step itself applies): cached steps
are recorded (a materialization whose metadata says cache hit) and dropped from the plan; the
remaining steps go to the wrapped executor (in-process, multiprocess, dagster-dask, or the Slurm
step-delegating one). Cell assets declare their upstream cells as non-input deps, so a step that
runs never needs a dropped step's output.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from further_dagster.core.instances import Instance
from further_dagster.dagster import _compat
from further_dagster.dagster import tags as T
from further_dagster.dagster.assets import instance_metadata
from further_dagster.dagster.checks import (
    INTACT,
    AfterChecks,
    NowChecks,
    executor_checks,
    intact_evaluation,
    shelf_life_evaluation,
)
from further_dagster.dagster.location import Location, asset_key_for
from further_dagster.dagster.resource_assets import data_version_of, observation_metadata
from further_dagster.dagster.run_config import run_freshness, run_partition_keys
from further_dagster.dagster.specs_config import op_config
from further_dagster.dagster.sqlite_events import event_batch, install_sqlite_engine_cache
from further_dagster.dagster.versions import (
    input_tags,
    latest_data_version,
    observation_tags,
    version_tags,
)
from further_dagster.dagster.waves import WaveExecutor, wave_steps
from further_dagster.errors import FurtherError

RECORD_CHOICES = ("materialization", "observation", "none")

CachedStep = list[tuple[dg.AssetKey, Mapping[str | None, list[Instance]]]]


@dataclass
class RunSteps:
    """What planning a run found, step by step.

    Attributes:
        cached: step key -> [(asset key, {partition key: instances})] for the steps whose
            instances are all stored.
        missing: step key -> what that step must compute (its own instances and any missing
            upstream instance they need), for the steps that are not cached.
        owned: instance key -> the step whose assets hold it.
        actual: the run's actual instances (by structural key).
    """

    cached: dict[str, CachedStep] = field(default_factory=dict)
    missing: dict[str, list[Instance]] = field(default_factory=dict)
    owned: dict[str, str] = field(default_factory=dict)
    actual: Mapping[str, Instance] = field(default_factory=dict)


def plan_steps(location: Location, execution_plan: _compat.ExecutionPlan, run: Any) -> RunSteps:
    """Plan every cell step of `run` by engine/plan.py's rule (see `RunSteps`). A step that
    cannot be planned (a bad freshness override, an unknown partition) is left out, so that
    it runs and fails with the message."""
    steps = _compat.step_asset_keys(execution_plan)
    cells = {k: v for k, v in steps.items() if v and all(a in location.asset_by_key for a in v)}
    found = RunSteps()
    if not cells:
        return found
    try:
        releases = None
        if location.has_resources:
            releases = location.release_resolver(run_freshness(location, run.tags, run.run_config))
        found.actual = actual = location.actual_instances(resolver=releases)
    except FurtherError:
        return found
    for step_key, asset_keys in cells.items():
        partitions = {
            key: run_partition_keys(run.tags, location.asset_by_key[key]) for key in asset_keys
        }
        given = op_config(run.run_config, step_key)
        try:
            step = location.step_instances(
                partitions,
                actual,
                config={key: given for key in asset_keys} if given else None,
                releases=releases,
                tags=run.tags,
            )
        except FurtherError:
            continue
        for inst in step.instances:
            found.owned.setdefault(inst.key, step_key)
        if step.missing:
            found.missing[step_key] = step.missing
        else:
            found.cached[step_key] = list(step.by_asset.items())
    return found


def cached_steps(
    location: Location, execution_plan: _compat.ExecutionPlan, run: Any
) -> tuple[dict[str, CachedStep], Mapping[str, Instance]]:
    """Step key -> [(asset key, {partition key: instances})] for the steps of `run` whose
    instances are all stored, and the run's actual instances (see `plan_steps`)."""
    found = plan_steps(location, execution_plan, run)
    return found.cached, found.actual


class SkipCachedExecutor(_compat.Executor):
    """Wraps `inner`; runs only the steps with an instance that is not stored."""

    def __init__(
        self, inner: _compat.Executor, location: Location, *, record: str = "materialization"
    ) -> None:
        self.inner = inner
        self.location = location
        self.record = record

    @property
    def retries(self) -> _compat.RetryMode:
        return self.inner.retries

    @property
    def step_dependency_config(self) -> Any:
        return self.inner.step_dependency_config

    def execute(
        self, plan_context: _compat.PlanOrchestrationContext, execution_plan: _compat.ExecutionPlan
    ) -> Iterator[_compat.DagsterEvent]:
        install_sqlite_engine_cache()  # this process writes the run's events
        started = time.perf_counter()
        planned = plan_steps(self.location, execution_plan, plan_context.dagster_run)
        cached, actual = planned.cached, planned.actual
        now_checks, after_checks = self._checks_here(plan_context, execution_plan, cached)
        all_steps = [s.key for s in execution_plan.get_all_steps_in_topo_order()]
        skipped = {*cached, *now_checks, *after_checks}
        to_run = [k for k in all_steps if k not in skipped]
        if cached:
            # where a person looks first: the run's tags (and the engine event below)
            plan_context.instance.add_run_tags(
                plan_context.run_id, {T.CACHED_STEPS: str(len(cached))}
            )
        # An event is stored as it is made: made in one batch, the run's releases, the cached
        # steps' records and their checks share one commit (each still reads what the ones
        # before it wrote: an input pointer is the storage id of the upstream's new record).
        with event_batch(plan_context.instance) as batch:
            before = list(self._observe_releases(plan_context, actual))
            if cached:
                before.append(
                    self._summary(plan_context, cached, to_run, time.perf_counter() - started)
                )
                if self.record != "none":
                    root = self.location.store().root
                    recorded = batch.materialized if batch is not None else None
                    for step_key, entries in cached.items():
                        for asset_key, by_pk in entries:
                            before += self._record(
                                plan_context, step_key, asset_key, by_pk, root, recorded
                            )
            before += self._evaluate_checks(
                plan_context,
                now_checks,
                actual,
                digest=None,
                recorded=batch.materialized if batch is not None else None,
            )
        yield from before
        if not to_run:
            return
        if isinstance(self.inner, WaveExecutor):
            self.inner.plan(wave_steps(planned.missing, planned.owned), planned.owned)
        succeeded: set[str] = set()
        if len(to_run) == len(all_steps):
            events = self.inner.execute(plan_context, execution_plan)
        else:
            sub_context, sub_plan = _compat.subset_context(
                plan_context, execution_plan, to_run, self.inner
            )
            events = self.inner.execute(sub_context, sub_plan)
        for event in events:
            if event.event_type_value == "STEP_SUCCESS" and event.step_key is not None:
                succeeded.add(event.step_key)
            yield event
        done = {
            s: [key for asset_step, key in pairs if asset_step in succeeded]
            for s, pairs in after_checks.items()
        }
        done = {s: keys for s, keys in done.items() if keys}
        if done:
            # computed now: a full audit (digests), as the check step would have done
            run = plan_context.dagster_run
            try:
                actual = actual or self.location.actual_instances(
                    run_freshness(self.location, run.tags, run.run_config)
                )
            except FurtherError:
                return
            with event_batch(plan_context.instance):
                after = list(self._evaluate_checks(plan_context, done, actual, digest=True))
            yield from after

    def _checks_here(
        self,
        plan_context: _compat.PlanOrchestrationContext,
        execution_plan: _compat.ExecutionPlan,
        cached: Mapping[str, CachedStep],
    ) -> tuple[NowChecks, AfterChecks]:
        """The check steps of dagster/checks.py this executor evaluates itself instead of
        starting a process (or a Slurm job) for them: (now, after), see
        `checks.executor_checks`."""
        cached_assets = {key for entries in cached.values() for key, _ in entries}
        run = plan_context.dagster_run
        try:
            run_freshness(self.location, run.tags, run.run_config)
        except FurtherError:
            return {}, {}
        return executor_checks(
            self.location,
            _compat.step_check_keys(execution_plan),
            _compat.step_asset_keys(execution_plan),
            cached_assets,
        )

    def _evaluate_checks(
        self,
        plan_context: _compat.PlanOrchestrationContext,
        checks: Mapping[str, list[dg.AssetCheckKey]],
        actual: Mapping[str, Instance],
        *,
        digest: bool | None,
        recorded: Mapping[dg.AssetKey, tuple[int, Any]] | None = None,
    ) -> Iterator[_compat.DagsterEvent]:
        """An asset check evaluation for each check of `checks` (see `_checks_here`); the
        intact check with digests (True), the cheap checks (False: sizes, no file read) or as
        the store's verify mode says (None, see dagster/checks.py). `recorded`: the
        materializations written in the open event batch (their records need no read)."""
        if not checks:
            return
        run = plan_context.dagster_run
        freshness = run_freshness(self.location, run.tags, run.run_config)
        targets = _compat.check_targets(
            plan_context.instance,
            list({k.asset_key: 0 for ks in checks.values() for k in ks}),
            recorded,
        )
        for step_key, keys in checks.items():
            for key in keys:
                cell = self.location.asset_by_key[key.asset_key].cell
                if key.name == INTACT:
                    by_pk = self.location.instances_for(key.asset_key, None, actual)
                    passed, severity, metadata, description = intact_evaluation(
                        self.location, by_pk, digest=digest
                    )
                else:
                    passed, metadata, description = shelf_life_evaluation(
                        self.location, cell, plan_context.instance, freshness
                    )
                    severity = dg.AssetCheckSeverity.WARN
                metadata[T.CHECKED_BY_EXECUTOR] = True
                yield _compat.check_evaluation_event(
                    plan_context,
                    step_key,
                    key,
                    passed=passed,
                    severity=severity,
                    metadata=metadata,
                    description=description,
                    targets=targets,
                )

    def _summary(
        self,
        plan_context: _compat.PlanOrchestrationContext,
        cached: Mapping[str, CachedStep],
        to_run: list[str],
        seconds: float,
    ) -> _compat.DagsterEvent:
        assets = [k.to_user_string() for entries in cached.values() for k, _ in entries]
        return _compat.log_run_event(
            plan_context,
            "engine",
            _compat.EngineEventData(
                metadata={
                    T.CACHED_STEPS: len(cached),
                    T.CACHED_ASSETS: dg.MetadataValue.json(assets),
                    T.STEPS_TO_RUN: len(to_run),
                    T.DECIDE_SECONDS: float(round(seconds, 4)),
                }
            ),
            None,
            f"further: {len(cached)} step(s) already stored, not started: "
            + ", ".join(assets[:10])
            + (" ..." if len(assets) > 10 else ""),
        )

    def _observe_releases(
        self, plan_context: _compat.PlanOrchestrationContext, actual: Mapping[str, Instance]
    ) -> Iterator[_compat.DagsterEvent]:
        """Before any step: an observation of each resource asset whose release under this
        run's freshness is not the data version Dagster last saw, so that every step of the run
        (computed or skipped) records the releases it really rests on as its inputs."""
        if not self.location.has_resources or not actual:
            return
        instance = plan_context.instance
        store = self.location.store()
        for cell, asset in self.location.projection.assets.items():
            if not cell.is_resource:
                continue
            releases = {
                i.skey: actual[i.skey].release or ""
                for i in asset.instances[None]
                if i.skey in actual
            }
            if not releases:
                continue
            version = data_version_of(releases)
            key = asset_key_for(cell)
            if latest_data_version(instance, key, source=True) == version:
                continue
            payload = dg.AssetObservation(
                asset_key=key,
                metadata=observation_metadata(store, asset, releases),
                tags=observation_tags(version),
            )
            yield _compat.log_run_event(
                plan_context,
                "observation",
                payload,
                None,
                f"{key.to_user_string()}: this run reads release {version}",
            )

    def _record(
        self,
        plan_context: _compat.PlanOrchestrationContext,
        step_key: str,
        asset_key: dg.AssetKey,
        by_pk: Mapping[str | None, list[Instance]],
        store_root: Any,
        recorded: Mapping[dg.AssetKey, tuple[int, Any]] | None = None,
    ) -> Iterator[_compat.DagsterEvent]:
        upstream = self.location.asset_by_key[asset_key].upstream
        # Recorded now, after the upstream steps' own events: their versions are the current ones
        # (those recorded in this batch known without a query).
        inputs = input_tags(plan_context.instance, upstream, recorded)
        for pk, group in by_pk.items():
            meta = instance_metadata(
                store_root, group[0], True, 0.0, getattr(self.location.store(), "index_url", None)
            )
            meta[T.SKIPPED_STEP] = True
            payload: dg.AssetMaterialization | dg.AssetObservation
            if self.record == "materialization":
                payload = dg.AssetMaterialization(
                    asset_key=asset_key,
                    partition=pk,
                    metadata=meta,
                    tags=version_tags(group[0], inputs),
                )
            else:
                payload = dg.AssetObservation(asset_key=asset_key, partition=pk, metadata=meta)
            yield _compat.log_run_event(
                plan_context,
                self.record,
                payload,
                step_key,
                f"{asset_key.to_user_string()} already stored (cache hit)",
            )


__all__ = ["RECORD_CHOICES", "RunSteps", "SkipCachedExecutor", "cached_steps", "plan_steps"]
