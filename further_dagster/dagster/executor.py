"""An executor that never starts a step whose instances are all stored.

Dagster never skips work by itself. Because a logic key depends only on Specs, releases and
upstream keys, the keys of every step of a run are known before the run starts, so this wrapper
decides up front: cached steps are recorded (a materialization whose metadata says cache hit) and
dropped from the plan; the remaining steps go to the wrapped executor (in-process,
multiprocess, or a step-delegating one such as Slurm). Cell assets declare their upstream cells
as non-input deps, so a step that runs never needs a dropped step's output.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import dagster as dg

from further_dagster.dagster import _compat
from further_dagster.dagster.assets import instance_metadata
from further_dagster.dagster.registry import _BY_ASSET_KEY, TOKEN_TAG, Compiled, compiled_for
from further_dagster.dagster.releases import configured_freshness, run_freshness
from further_dagster.engine.compute import is_stored
from further_dagster.errors import FurtherError
from further_dagster.store import ArtifactStore

RECORD_CHOICES = ("materialization", "observation", "none")

PARTITION_TAG = "dagster/partition"
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


def run_partition_keys(
    tags: dict[str, str], compiled: Compiled, asset_key: dg.AssetKey
) -> list[str] | None:
    asset = compiled.asset_by_key[asset_key]
    if asset.partitions is None:
        return None
    if PARTITION_TAG in tags:
        return [tags[PARTITION_TAG]]
    if RANGE_START_TAG in tags:
        keys = asset.partitions.keys
        start, end = keys.index(tags[RANGE_START_TAG]), keys.index(tags[RANGE_END_TAG])
        return keys[start : end + 1]
    return list(asset.partitions.keys)


class SkipCachedExecutor(_compat.Executor):
    """Wraps `inner`; runs only the steps with an instance that is not stored."""

    def __init__(
        self,
        inner: _compat.Executor,
        *,
        store_root: str | None = None,
        record: str = "materialization",
    ) -> None:
        self.inner = inner
        self.store_root = store_root
        self.record = record

    @property
    def retries(self) -> Any:
        return self.inner.retries

    @property
    def step_dependency_config(self) -> Any:
        return self.inner.step_dependency_config

    def cached_steps(
        self, plan_context: Any, execution_plan: Any
    ) -> dict[str, list[tuple[dg.AssetKey, dict[str | None, list[Any]]]]]:
        """Step key -> [(asset key, {partition key: instances})] for steps fully stored."""
        job_def = plan_context.reconstructable_job.get_definition()
        tags = dict(plan_context.dagster_run.tags)
        configured = configured_freshness(plan_context.dagster_run.run_config)
        store = ArtifactStore(self.store_root)
        actual_cache: dict[int, Any] = {}
        cached: dict[str, list[tuple[dg.AssetKey, dict[str | None, list[Any]]]]] = {}
        for step_key, asset_keys in _compat.step_asset_keys(execution_plan, job_def).items():
            step_tags = execution_plan.get_step_by_key(step_key).tags or {}
            if not asset_keys or TOKEN_TAG not in step_tags:
                continue
            if any(k not in _BY_ASSET_KEY for k in asset_keys):
                continue
            entries = []
            for asset_key in asset_keys:
                compiled = compiled_for(asset_key, step_tags)
                actual = actual_cache.get(id(compiled))
                if actual is None:
                    try:
                        freshness = run_freshness(compiled, tags, configured)
                        actual = compiled.actual_instances(freshness)
                    except FurtherError:
                        break  # let the step run and fail with the message
                    actual_cache[id(compiled)] = actual
                pks = run_partition_keys(tags, compiled, asset_key)
                by_pk = compiled.instances_for(asset_key, pks, actual)
                insts = [i for group in by_pk.values() for i in group]
                if not all(is_stored(store, i) for i in insts):
                    break
                entries.append((asset_key, by_pk))
            else:
                cached[step_key] = entries
        return cached

    def execute(self, plan_context: Any, execution_plan: Any) -> Iterator[Any]:
        started = time.perf_counter()
        cached = self.cached_steps(plan_context, execution_plan)
        to_run = [
            s.key for s in execution_plan.get_all_steps_in_topo_order() if s.key not in cached
        ]
        if cached:
            store_root = ArtifactStore(self.store_root).root
            assets = [k.to_user_string() for entries in cached.values() for k, _ in entries]
            yield _compat.log_run_event(
                plan_context,
                "engine",
                _compat.EngineEventData(
                    metadata={
                        "further/cached_steps": len(cached),
                        "further/cached_assets": dg.MetadataValue.json(assets),
                        "further/steps_to_run": len(to_run),
                        "further/decide_seconds": float(round(time.perf_counter() - started, 4)),
                    }
                ),
                None,
                f"further: {len(cached)} step(s) already stored, not started: "
                + ", ".join(assets[:10])
                + (" ..." if len(assets) > 10 else ""),
            )
            if self.record != "none":
                for step_key, entries in cached.items():
                    for asset_key, by_pk in entries:
                        yield from self._record(
                            plan_context, step_key, asset_key, by_pk, store_root
                        )
        if not to_run:
            return
        if not cached:
            yield from self.inner.execute(plan_context, execution_plan)
            return
        sub_context, sub_plan = _compat.subset_context(
            plan_context, execution_plan, to_run, self.inner
        )
        yield from self.inner.execute(sub_context, sub_plan)

    def _record(
        self,
        plan_context: Any,
        step_key: str,
        asset_key: dg.AssetKey,
        by_pk: dict[str | None, list[Any]],
        store_root: Any,
    ) -> Iterator[Any]:
        for pk, group in by_pk.items():
            meta = instance_metadata(store_root, group[0], True, 0.0)
            meta["further/skipped_step"] = True
            if self.record == "materialization":
                payload: Any = dg.AssetMaterialization(
                    asset_key=asset_key, partition=pk, metadata=meta
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


def further_executor_def(
    name: str = "further", *, default_inner: str = "multiprocess"
) -> dg.ExecutorDefinition:
    """The default executor of further_dagster Definitions: Dagster's multiprocess (or
    in-process) executor, minus every step whose instances are already stored."""

    @dg.executor(
        name=name,
        config_schema={
            "inner": dg.Field(
                dg.Enum("FurtherInner", [dg.EnumValue("multiprocess"), dg.EnumValue("in_process")]),
                default_value=default_inner,
                description="Executor that runs the steps that are not stored.",
            ),
            "max_concurrent": dg.Field(
                dg.Noneable(int), default_value=None, description="multiprocess: processes at once"
            ),
            "retries": _compat.get_retries_config(),
            "record_cached": dg.Field(
                dg.Enum("FurtherRecordCached", [dg.EnumValue(c) for c in RECORD_CHOICES]),
                default_value="materialization",
                description="What a skipped (already stored) step records for its assets.",
            ),
            "store_root": dg.Field(
                dg.Noneable(str),
                default_value=None,
                description="Store root (default: FURTHER_ROOT or ./.further)",
            ),
        },
        requirements=dg.multiple_process_executor_requirements(),
    )
    def _further_executor(init_context: dg.InitExecutorContext) -> _compat.Executor:
        config: dict[str, Any] = dict(init_context.executor_config)
        inner_kind = config["inner"]
        inner_config: dict[str, Any] = {"retries": config["retries"]}
        if inner_kind == "multiprocess":
            inner_config["max_concurrent"] = config["max_concurrent"]
        inner = _compat.inner_executor(inner_kind, inner_config)
        return SkipCachedExecutor(
            inner, store_root=config["store_root"], record=config["record_cached"]
        )

    return _further_executor
