"""The skip-cached executor: stored steps never start, and say so."""

import contextlib
from pathlib import Path

import dagster as dg
import pytest

from further_dagster.dagster import location_of
from tests.dagster import defs_module

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.dagster

SRC = dg.AssetKey(["dag_demo", "src"])
POWER = dg.AssetKey(["dag_demo", "power"])
SUMMARY = dg.AssetKey(["dag_demo", "summary"])


def _run(instance, selection, tags=None):
    # Dagster has no public way to make an asset job reconstructable outside a code location.
    from dagster._core.definitions.reconstruct import ReconstructableRepository

    repo = ReconstructableRepository.for_module(
        "tests.dagster.defs_module", "in_process_defs", working_directory=str(ROOT)
    )
    job = repo.get_reconstructable_job("__ASSET_JOB")
    with dg.execute_job(
        job, instance=instance, asset_selection=selection, tags=tags or {}
    ) as result:
        assert result.success
        return [e for e in result.all_events]


def _range_tags():
    keys = location_of(defs_module.defs).asset_by_key[POWER].partitions.keys
    return {
        "dagster/asset_partition_range_start": keys[0],
        "dagster/asset_partition_range_end": keys[-1],
    }


def test_cached_steps_never_start(further_tmp_root, calls, dagster_instance):
    with contextlib.nullcontext(dagster_instance) as instance:
        first = _run(instance, [SRC, POWER, SUMMARY], _range_tags())
        started = [e.step_key for e in first if e.event_type_value == "STEP_START"]
        assert sorted(started) == ["dag_demo__power", "dag_demo__src", "dag_demo__summary"]
        assert calls.count() == 1 + 3 + 1

        second = _run(instance, [SRC, POWER, SUMMARY], _range_tags())
        assert [e for e in second if e.event_type_value == "STEP_START"] == []
        assert calls.count() == 5
        engine = [
            e
            for e in second
            if e.event_type_value == "ENGINE_EVENT" and "already stored" in (e.message or "")
        ]
        assert len(engine) == 1 and "3 step(s) already stored" in engine[0].message
        mats = [e for e in second if e.event_type_value == "ASSET_MATERIALIZATION"]
        # one per unpartitioned asset and one per partition of the swept asset
        assert len(mats) == 1 + 3 + 1
        for event in mats:
            meta = event.event_specific_data.materialization.metadata
            assert meta["further/cache"].value == "hit"
            assert len(meta["further/logic_key"].value) == 32
        assert instance.get_latest_materialization_event(SUMMARY) is not None


def test_only_uncached_steps_run_even_below_a_cached_one(further_tmp_root, calls, dagster_instance):
    from further_dagster import Session

    with contextlib.nullcontext(dagster_instance) as instance:
        Session(progress=False).call("dag_demo.src")  # a notebook stored src
        events = _run(instance, [SRC, POWER], _range_tags())
        started = [e.step_key for e in events if e.event_type_value == "STEP_START"]
        assert started == ["dag_demo__power"]
        assert calls.count("src") == 1 and calls.count("power") == 3


def test_run_config_specs_are_planned_by_the_executor_too(
    further_tmp_root, calls, dagster_instance
):
    from dagster._core.definitions.reconstruct import ReconstructableRepository

    repo = ReconstructableRepository.for_module(
        "tests.dagster.defs_module", "in_process_defs", working_directory=str(ROOT)
    )
    config = {"ops": {"dag_demo__src": {"config": {"n": 6}}}}

    def run():
        with dg.execute_job(
            repo.get_reconstructable_job("__ASSET_JOB"),
            instance=dagster_instance,
            asset_selection=[SRC],
            run_config=config,
        ) as result:
            assert result.success
            return [e.event_type_value for e in result.all_events]

    _run(dagster_instance, [SRC])  # the default instance (n=4) is stored
    assert "STEP_START" in run()  # n=6 is another instance: not a cache hit
    assert "STEP_START" not in run()  # now it is stored
    latest = dagster_instance.get_latest_materialization_event(SRC).asset_materialization
    assert latest.metadata["further/specs"].value == {"n": 6}
    assert calls.count("src") == 2
