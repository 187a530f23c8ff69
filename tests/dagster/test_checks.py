"""Asset checks shipped by build_definitions: stored_result_intact and release_within_shelf_life."""

import datetime as dt
import time
from pathlib import Path

import dagster as dg
import pytest

from further_dagster import build_definitions
from further_dagster.dagster import checks, further_executor_def, location_of
from tests.dagster import defs_module
from tests.dagster.resource_defs import dag_res

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.dagster

SRC = dg.AssetKey(["dag_demo", "src"])
POWER = dg.AssetKey(["dag_demo", "power"])
SUMMARY = dg.AssetKey(["dag_demo", "summary"])
FEED = dg.AssetKey(["dag_res", "feed"])
INTACT_POWER = dg.AssetCheckKey(POWER, checks.INTACT)
SHELF = dg.AssetCheckKey(FEED, checks.SHELF_LIFE)

# dag_res's summary branch with a one-minute shelf life for its resource cell, run by the
# skip-cached executor around the in-process one.
current_defs = build_definitions(
    dag_res,
    calls=[("dag_res.summary", {})],
    freshness="current:60",
    executor=further_executor_def().configured({"inner": "in_process"}),
)


def _job(attribute, module="tests.dagster.defs_module"):
    # Dagster has no public way to make an asset job reconstructable outside a code location.
    from dagster._core.definitions.reconstruct import ReconstructableRepository

    repo = ReconstructableRepository.for_module(module, attribute, working_directory=str(ROOT))
    return repo.get_reconstructable_job("__ASSET_JOB")


def _run(instance, selection, tags=None):
    with dg.execute_job(
        _job("in_process_defs"), instance=instance, asset_selection=selection, tags=tags or {}
    ) as result:
        assert result.success
        return list(result.all_events)


def _range_tags():
    keys = location_of(defs_module.defs).asset_by_key[POWER].partitions.keys
    return {
        "dagster/asset_partition_range_start": keys[0],
        "dagster/asset_partition_range_end": keys[-1],
    }


def _evaluations(events):
    return {
        e.event_specific_data.asset_check_key: e.event_specific_data
        for e in events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    }


def _started(events):
    return [e.step_key for e in events if e.event_type_value == "STEP_START"]


def _checks_only(defs, instance, *keys):
    """A run of only these checks (as "Execute" on a check in the UI)."""
    result = dg.materialize(
        [*defs.assets, *defs.asset_checks],
        selection=dg.AssetSelection.checks(*keys),
        instance=instance,
        resources=defs.resources,
        raise_on_error=False,
    )
    assert result.success
    return _evaluations(result.all_events)


def test_every_cell_asset_has_a_non_blocking_intact_check():
    defs = defs_module.defs
    specs = [spec for c in defs.asset_checks for spec in c.check_specs]
    by_asset = {spec.asset_key: spec for spec in specs}
    assert len(specs) == len(by_asset)
    assert set(by_asset) == {SRC, POWER, SUMMARY}
    assert all(s.name == checks.INTACT and not s.blocking for s in by_asset.values())
    off = build_definitions(defs_module.dag_demo, asset_checks=False)
    assert not list(off.asset_checks or [])


def test_all_checks_are_one_node_of_the_asset_job():
    # one op for every check of the code location: the asset job has one node per asset + 1
    (only,) = defs_module.defs.asset_checks
    assert only.node_def.name == "dag_demo__further_checks"
    job = defs_module.defs.resolve_implicit_global_asset_job_def()
    assert len(job.graph.node_defs) == len(list(defs_module.defs.assets)) + 1


def test_intact_check_passes_after_a_computed_run(further_tmp_root, calls, dagster_instance):
    events = _run(dagster_instance, [SRC, POWER, SUMMARY], _range_tags())
    # the check steps are evaluated by the executor after their asset's step, never started
    assert sorted(_started(events)) == ["dag_demo__power", "dag_demo__src", "dag_demo__summary"]
    found = _evaluations(events)
    assert set(found) == {dg.AssetCheckKey(k, checks.INTACT) for k in (SRC, POWER, SUMMARY)}
    power = found[INTACT_POWER]
    assert power.passed
    assert power.metadata["checked"].value == 3
    assert power.metadata["damaged"].value == {}
    assert power.metadata["missing"].value == []
    assert power.metadata["digests_checked"].value is True
    record = dagster_instance.event_log_storage.get_latest_asset_check_execution_by_key(
        [INTACT_POWER]
    )[INTACT_POWER]
    assert record.status.value == "SUCCEEDED"


def test_a_flipped_byte_fails_the_check_with_error(further_tmp_root, calls, dagster_instance):
    _run(dagster_instance, [SRC, POWER, SUMMARY], _range_tags())
    location = location_of(defs_module.in_process_defs)
    asset = location.asset_by_key[POWER]
    pk = next(k for k, label in asset.partitions.labels.items() if label == "p=2")
    (inst,) = asset.instances[pk]
    path = location.store().instance_dir("dag_demo", "power", inst.key) / "result" / "values.json"
    data = bytearray(path.read_bytes())
    data[1] ^= 0x01  # "[0, 1, 4, 9]" -> "[1, 1, 4, 9]": same size, other bytes
    path.write_bytes(bytes(data))

    found = _checks_only(defs_module.in_process_defs, dagster_instance, INTACT_POWER)
    evaluation = found[INTACT_POWER]
    assert not evaluation.passed
    assert evaluation.severity == dg.AssetCheckSeverity.ERROR
    damaged = evaluation.metadata["damaged"].value
    assert list(damaged) == [pk] and "digest" in damaged[pk]
    assert evaluation.metadata["missing"].value == []


def test_a_missing_instance_is_a_warning_not_damage(further_tmp_root, calls, dagster_instance):
    found = _checks_only(defs_module.in_process_defs, dagster_instance, INTACT_POWER)
    evaluation = found[INTACT_POWER]
    assert not evaluation.passed
    assert evaluation.severity == dg.AssetCheckSeverity.WARN
    assert evaluation.metadata["damaged"].value == {}
    assert len(evaluation.metadata["missing"].value) == 3


def test_a_cached_run_starts_no_step_and_records_the_check(
    further_tmp_root, calls, dagster_instance
):
    _run(dagster_instance, [SRC, POWER, SUMMARY], _range_tags())
    second = _run(dagster_instance, [SRC, POWER, SUMMARY], _range_tags())
    assert _started(second) == []
    assert calls.count() == 5
    found = _evaluations(second)
    assert set(found) == {dg.AssetCheckKey(k, checks.INTACT) for k in (SRC, POWER, SUMMARY)}
    for evaluation in found.values():
        assert evaluation.passed
        assert evaluation.metadata["further/checked_by_executor"].value is True
        assert evaluation.metadata["digests_checked"].value is True  # FURTHER_VERIFY=digest
        assert evaluation.target_materialization_data is not None
    engine = [e.message for e in second if e.event_type_value == "ENGINE_EVENT"]
    assert any("3 step(s) already stored" in (m or "") for m in engine)
    record = dagster_instance.event_log_storage.get_latest_asset_check_execution_by_key(
        [INTACT_POWER]
    )[INTACT_POWER]
    assert record.status.value == "SUCCEEDED"
    assert record.run_id == dagster_instance.get_runs(limit=1)[0].run_id


def _flip_a_byte(pk_label="p=2"):
    """Same size, other bytes: only a digest finds it."""
    location = location_of(defs_module.in_process_defs)
    asset = location.asset_by_key[POWER]
    pk = next(k for k, label in asset.partitions.labels.items() if label == pk_label)
    (inst,) = asset.instances[pk]
    path = location.store().instance_dir("dag_demo", "power", inst.key) / "result" / "values.json"
    data = bytearray(path.read_bytes())
    data[1] ^= 0x01
    path.write_bytes(bytes(data))
    return pk


def test_a_fully_cached_run_finds_a_flipped_byte_by_digest(
    further_tmp_root, calls, dagster_instance
):
    _run(dagster_instance, [SRC, POWER, SUMMARY], _range_tags())
    pk = _flip_a_byte()
    second = _run(dagster_instance, [SRC, POWER, SUMMARY], _range_tags())
    assert _started(second) == []  # the sizes match: planning finds every step stored
    evaluation = _evaluations(second)[INTACT_POWER]
    assert not evaluation.passed
    assert evaluation.severity == dg.AssetCheckSeverity.ERROR
    assert evaluation.metadata["digests_checked"].value is True
    assert list(evaluation.metadata["damaged"].value) == [pk]


def test_under_verify_size_a_cached_run_digests_only_while_cheap(
    further_tmp_root, calls, dagster_instance, monkeypatch
):
    monkeypatch.setenv("FURTHER_VERIFY", "size")
    _run(dagster_instance, [SRC, POWER, SUMMARY], _range_tags())
    _flip_a_byte()
    # small results: still digested under FURTHER_VERIFY=size
    cheap = _evaluations(_run(dagster_instance, [POWER], _range_tags()))[INTACT_POWER]
    assert not cheap.passed and cheap.metadata["digests_checked"].value is True
    # over the budget: the size checks only, and the evaluation says so
    monkeypatch.setattr(checks, "CHEAP_DIGEST_BYTES", 0)
    costly = _evaluations(_run(dagster_instance, [POWER], _range_tags()))[INTACT_POWER]
    assert costly.passed and costly.metadata["digests_checked"].value is False


def _observe_feed(instance):
    instance.report_runless_asset_event(
        dg.AssetObservation(asset_key=FEED, tags={"dagster/data_version": "r1"})
    )


def _shelf_life_run(instance):
    """A run of only the shelf-life check through the code location's executor."""
    job = _job("current_defs", module="tests.dagster.test_checks").get_subset(
        asset_selection=set(), asset_check_selection={SHELF}
    )
    with dg.execute_job(job, instance=instance) as result:
        assert result.success
        return list(result.all_events)


def test_only_current_resource_cells_get_a_shelf_life_check():
    keys = {k for c in current_defs.asset_checks for k in c.check_keys}
    assert SHELF in keys
    plain = build_definitions(dag_res, calls=[("dag_res.summary", {})])
    assert SHELF not in {k for c in plain.asset_checks for k in c.check_keys}


def test_shelf_life_check_passes_then_fails_with_age(
    further_tmp_root, calls, dagster_instance, monkeypatch
):
    never = _checks_only(current_defs, dagster_instance, SHELF)[SHELF]
    assert not never.passed and "never observed" in never.description

    _observe_feed(dagster_instance)
    events = _shelf_life_run(dagster_instance)
    assert _started(events) == []  # evaluated by the executor, no step started
    fresh = _evaluations(events)[SHELF]
    assert fresh.passed
    assert fresh.metadata["shelf_life_seconds"].value == 60.0
    assert fresh.metadata["age_seconds"].value < 60
    assert fresh.metadata["observed_by"].value == "dagster"

    later = time.time() + 120
    monkeypatch.setattr(checks, "now", lambda: later)
    old = _evaluations(_shelf_life_run(dagster_instance))[SHELF]
    assert not old.passed
    assert old.metadata["age_seconds"].value >= 119
    assert "older than 60 s" in old.description


def test_an_old_release_history_entry_fails_the_shelf_life_check(
    further_tmp_root, dagster_instance
):
    from further_dagster.store import ReleaseHistory

    location = location_of(current_defs)
    asset = next(a for c, a in location.projection.assets.items() if c.is_resource)
    (inst,) = asset.instances[None]
    history = ReleaseHistory(location.store().root)
    stamp = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    history.record("dag_res", "feed", inst.skey, "r1", stamp, source="sensor")
    old = _checks_only(current_defs, dagster_instance, SHELF)[SHELF]
    assert not old.passed
    assert old.metadata["observed_by"].value == "release history"
    assert old.metadata["age_seconds"].value >= 3599

    history.record("dag_res", "feed", inst.skey, "r1", dt.datetime.now(dt.UTC), source="sensor")
    assert _checks_only(current_defs, dagster_instance, SHELF)[SHELF].passed


def test_a_check_of_an_asset_outside_the_run_runs_the_check_step(
    further_tmp_root, calls, dagster_instance
):
    _run(dagster_instance, [SRC, POWER, SUMMARY], _range_tags())
    intact_src = dg.AssetCheckKey(SRC, checks.INTACT)
    job = _job("in_process_defs").get_subset(
        asset_selection={SRC}, asset_check_selection={intact_src, INTACT_POWER}
    )
    with dg.execute_job(job, instance=dagster_instance) as result:
        assert result.success
        events = list(result.all_events)
    # power is not in the run: the executor cannot evaluate its check, so the check step runs
    # (and evaluates both of its checks itself, with digests)
    assert _started(events) == ["dag_demo__further_checks"]
    found = _evaluations(events)
    assert set(found) == {intact_src, INTACT_POWER}
    assert all(e.passed and e.metadata["digests_checked"].value for e in found.values())
    assert all("further/checked_by_executor" not in e.metadata for e in found.values())


def test_a_large_location_spreads_its_checks_over_ops(
    monkeypatch, further_tmp_root, calls, dagster_instance
):
    # Beyond CHECKS_PER_OP cell assets the checks go to several ops (Dagster's job build costs
    # the square of one op's checks): every asset keeps exactly one intact check, and a run of
    # checks of both ops evaluates each of them.
    monkeypatch.setattr(checks, "CHECKS_PER_OP", 2)
    defs = build_definitions(
        defs_module.dag_demo, executor=further_executor_def().configured({"inner": "in_process"})
    )
    ops = list(defs.asset_checks)
    assert [c.node_def.name for c in ops] == [
        "dag_demo__further_checks",
        "dag_demo__part2__further_checks",
    ]
    assert [len(list(c.check_specs)) for c in ops] == [2, 1]
    keys = [dg.AssetCheckKey(k, checks.INTACT) for k in (SRC, POWER, SUMMARY)]
    assert sorted(s.key for c in ops for s in c.check_specs) == sorted(keys)
    job = defs.resolve_implicit_global_asset_job_def()
    assert len(job.graph.node_defs) == len(list(defs.assets)) + 2

    found = _checks_only(defs, dagster_instance, *keys)
    assert set(found) == set(keys)
    assert all(not e.passed and e.severity == dg.AssetCheckSeverity.WARN for e in found.values())
