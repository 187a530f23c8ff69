"""Dagster's own staleness is true: read with Dagster's stale-status resolver (what the UI and
GraphQL `staleStatus` show) after computed and cached runs."""

from pathlib import Path

import dagster as dg
import pytest
from dagster._core.definitions.data_version import StaleStatus
from dagster._utils.test.data_versions import get_stale_status_resolver

from further_dagster import build_definitions
from further_dagster.dagster import location_of
from tests.dagster import defs_module, resource_defs
from tests.dagster.defs_module import Src, dag_demo
from tests.dagster.resource_defs import RELEASES

pytestmark = pytest.mark.dagster

ROOT = Path(__file__).resolve().parents[2]
SRC = dg.AssetKey(["dag_demo", "src"])
POWER = dg.AssetKey(["dag_demo", "power"])
SUMMARY = dg.AssetKey(["dag_demo", "summary"])
FEED = dg.AssetKey(["dag_res", "feed"])
SCALED = dg.AssetKey(["dag_res", "scaled"])
STATIC = dg.AssetKey(["dag_res", "static"])


def _run(module, attribute, instance, selection, tags=None):
    from dagster._core.definitions.reconstruct import ReconstructableRepository

    repo = ReconstructableRepository.for_module(module, attribute, working_directory=str(ROOT))
    with dg.execute_job(
        repo.get_reconstructable_job("__ASSET_JOB"),
        instance=instance,
        asset_selection=selection,
        tags=tags or {},
    ) as result:
        assert result.success
        return [e.event_type_value for e in result.all_events]


def _range(defs, key):
    keys = location_of(defs).asset_by_key[key].partitions.keys
    return keys, {
        "dagster/asset_partition_range_start": keys[0],
        "dagster/asset_partition_range_end": keys[-1],
    }


def _status(defs, instance, key, partition=None):
    # Dagster's own resolver: what the UI and GraphQL `staleStatus` show
    resolver = get_stale_status_resolver(instance, list(defs.assets))
    return resolver.get_status(key, partition)


def _latest(instance, key, partition=None):
    record = instance.get_latest_data_version_record(key, partition_key=partition)
    return record.event_log_entry.asset_materialization


@pytest.fixture
def instance():
    with dg.instance_for_test() as inst:
        yield inst


def test_cached_materializations_carry_data_and_code_versions(further_tmp_root, instance):
    defs = defs_module.in_process_defs
    keys, tags = _range(defs, POWER)
    _run("tests.dagster.defs_module", "in_process_defs", instance, [SRC, POWER, SUMMARY], tags)
    events = _run(
        "tests.dagster.defs_module", "in_process_defs", instance, [SRC, POWER, SUMMARY], tags
    )
    assert "STEP_START" not in events  # every step was cached
    assert instance.get_runs(limit=1)[0].tags["further/cached_steps"] == "3"
    for key, partitions in ((SRC, [None]), (POWER, keys), (SUMMARY, [None])):
        for pk in partitions:
            mat = _latest(instance, key, pk)
            assert mat.metadata["further/cache"].value == "hit"
            logic_key = mat.metadata["further/logic_key"].value
            assert mat.tags["dagster/data_version"] == logic_key  # not INITIAL
            assert mat.tags["dagster/code_version"] == str(
                location_of(defs).asset_by_key[key].cell.logic_version
            )
            assert _status(defs, instance, key, pk) == StaleStatus.FRESH


def test_each_partition_has_its_own_metadata(further_tmp_root, instance):
    defs = defs_module.in_process_defs
    keys, tags = _range(defs, POWER)
    _run("tests.dagster.defs_module", "in_process_defs", instance, [SRC, POWER], tags)
    metas = [_latest(instance, POWER, pk).metadata for pk in keys]
    assert [m["further/specs"].value for m in metas] == [{"p": 1}, {"p": 2}, {"p": 3}]
    assert len({m["further/logic_key"].value for m in metas}) == 3
    assert all(m["further/cache"].value == "miss" for m in metas)
    # each partition's data version is its own instance's logic key, not one for the step
    tags = [_latest(instance, POWER, pk).tags for pk in keys]
    assert [t["dagster/data_version"] for t in tags] == [
        m["further/logic_key"].value for m in metas
    ]
    assert all(_status(defs, instance, POWER, pk) == StaleStatus.FRESH for pk in keys)


def test_a_logic_version_bump_marks_the_cell_stale(further_tmp_root, instance):
    defs = defs_module.in_process_defs
    _run("tests.dagster.defs_module", "in_process_defs", instance, [SRC])
    _run("tests.dagster.defs_module", "in_process_defs", instance, [SRC])  # cached
    assert _status(defs, instance, SRC) == StaleStatus.FRESH
    old = Src.logic_version
    try:
        Src.logic_version = old + 1
        bumped = build_definitions(dag_demo)
        assert _status(bumped, instance, SRC) == StaleStatus.STALE
    finally:
        Src.logic_version = old


def test_a_new_release_marks_what_it_reaches_stale_and_only_that(further_tmp_root, instance):
    defs = resource_defs.defs
    selection = [FEED, SCALED, STATIC]
    keys, tags = _range(defs, SCALED)
    module = "tests.dagster.resource_defs"
    _run(module, "defs", instance, [SCALED, STATIC], tags)
    # the run recorded the release it read, so nothing is stale, even after an observation
    # that finds the same release (what the release sensor does on its first tick)
    feed_asset = next(a for a in defs.assets if getattr(a, "key", None) == FEED)
    from further_dagster.dagster import _compat

    _compat.observe([feed_asset], instance=instance, resources=defs.resources)
    assert all(_status(defs, instance, SCALED, pk) == StaleStatus.FRESH for pk in keys)
    assert _status(defs, instance, STATIC) == StaleStatus.FRESH
    RELEASES["a"] = "r2"
    try:
        _compat.observe([feed_asset], instance=instance, resources=defs.resources)
        assert all(_status(defs, instance, SCALED, pk) == StaleStatus.STALE for pk in keys)
        assert _status(defs, instance, STATIC) == StaleStatus.FRESH
    finally:
        RELEASES["a"] = "r1"
    del selection
