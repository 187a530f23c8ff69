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
from typing import Any

import dagster as dg

from further_dagster.core.instances import Instance
from further_dagster.dagster import _compat
from further_dagster.dagster import tags as T
from further_dagster.dagster.assets import instance_metadata
from further_dagster.dagster.location import Location
from further_dagster.dagster.run_config import run_freshness, run_partition_keys
from further_dagster.errors import FurtherError

RECORD_CHOICES = ("materialization", "observation", "none")

CachedStep = list[tuple[dg.AssetKey, Mapping[str | None, list[Instance]]]]


def cached_steps(
    location: Location, execution_plan: _compat.ExecutionPlan, run: Any
) -> dict[str, CachedStep]:
    """Step key -> [(asset key, {partition key: instances})] for the steps of `run` whose
    instances are all stored. A step that cannot be planned (a bad freshness override, an
    unknown partition) is left to run, so that it fails with the message."""
    steps = _compat.step_asset_keys(execution_plan)
    cells = {k: v for k, v in steps.items() if v and all(a in location.asset_by_key for a in v)}
    if not cells:
        return {}
    try:
        freshness = run_freshness(location, run.tags, run.run_config)
        actual = location.actual_instances(freshness)
    except FurtherError:
        return {}
    cached: dict[str, CachedStep] = {}
    for step_key, asset_keys in cells.items():
        partitions = {
            key: run_partition_keys(run.tags, location.asset_by_key[key]) for key in asset_keys
        }
        try:
            step = location.step_instances(partitions, actual)
        except FurtherError:
            continue
        if not step.missing:
            cached[step_key] = list(step.by_asset.items())
    return cached


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
        started = time.perf_counter()
        cached = cached_steps(self.location, execution_plan, plan_context.dagster_run)
        to_run = [
            s.key for s in execution_plan.get_all_steps_in_topo_order() if s.key not in cached
        ]
        if cached:
            yield self._summary(plan_context, cached, to_run, time.perf_counter() - started)
            if self.record != "none":
                root = self.location.store().root
                for step_key, entries in cached.items():
                    for asset_key, by_pk in entries:
                        yield from self._record(plan_context, step_key, asset_key, by_pk, root)
        if not to_run:
            return
        if not cached:
            yield from self.inner.execute(plan_context, execution_plan)
            return
        sub_context, sub_plan = _compat.subset_context(
            plan_context, execution_plan, to_run, self.inner
        )
        yield from self.inner.execute(sub_context, sub_plan)

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

    def _record(
        self,
        plan_context: _compat.PlanOrchestrationContext,
        step_key: str,
        asset_key: dg.AssetKey,
        by_pk: Mapping[str | None, list[Instance]],
        store_root: Any,
    ) -> Iterator[_compat.DagsterEvent]:
        for pk, group in by_pk.items():
            meta = instance_metadata(store_root, group[0], True, 0.0)
            meta[T.SKIPPED_STEP] = True
            payload: dg.AssetMaterialization | dg.AssetObservation
            if self.record == "materialization":
                payload = dg.AssetMaterialization(asset_key=asset_key, partition=pk, metadata=meta)
            else:
                payload = dg.AssetObservation(asset_key=asset_key, partition=pk, metadata=meta)
            yield _compat.log_run_event(
                plan_context,
                self.record,
                payload,
                step_key,
                f"{asset_key.to_user_string()} already stored (cache hit)",
            )


__all__ = ["RECORD_CHOICES", "SkipCachedExecutor", "cached_steps"]
