"""Resource cells in Dagster: observable source assets, run freshness, and the release sensor."""

import json
from pathlib import Path

import dagster as dg
import pytest

from further_dagster import ArtifactStore, Session
from further_dagster.dagster import _compat, location_of
from further_dagster.dagster.sensor import SENSOR_NAME
from tests.dagster import resource_defs
from tests.dagster.resource_defs import DATA, RELEASES

pytestmark = pytest.mark.dagster

ROOT = Path(__file__).resolve().parents[2]

FEED = dg.AssetKey(["dag_res", "feed"])
SCALED = dg.AssetKey(["dag_res", "scaled"])
SUMMARY = dg.AssetKey(["dag_res", "summary"])
SHIFTED = dg.AssetKey(["dag_res", "shifted"])
SIDE = dg.AssetKey(["dag_res", "side"])
STATIC = dg.AssetKey(["dag_res", "static"])
REPORT = dg.AssetKey(["dag_res", "report"])
RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"


@pytest.fixture(autouse=True)
def _external_state(further_tmp_root):
    saved = dict(RELEASES), dict(DATA)
    yield
    RELEASES.clear()
    RELEASES.update(saved[0])
    DATA.clear()
    DATA.update(saved[1])


@pytest.fixture
def instance():
    with dg.instance_for_test() as inst:
        yield inst


def _skip(result):
    return result.skip_reason.skip_message if result.skip_reason else None


def _partitions(defs, key):
    return location_of(defs).asset_by_key[key].partitions.keys


class Ticker:
    """Evaluates the shipped sensor the way the daemon does, carrying its cursor."""

    def __init__(self, defs, instance):
        self.defs, self.instance, self.cursor = defs, instance, None

    def tick(self):
        sensor = self.defs.resolve_sensor_def(SENSOR_NAME)
        context = dg.build_sensor_context(
            instance=self.instance, definitions=self.defs, cursor=self.cursor
        )
        result = sensor(context)
        self.cursor = result.cursor
        return result


def test_a_resource_cell_is_an_observable_source_with_lineage_and_a_running_sensor():
    defs = resource_defs.defs
    graph = defs.resolve_asset_graph()
    feed = graph.get(FEED)
    assert feed.is_observable and not feed.is_materializable
    assert feed.code_version == "1"  # an AssetSpec-based observable asset shows it
    assert feed.partitions_def is None and feed.group_name == "dag_res"
    assert FEED in graph.get(SCALED).parent_keys and FEED in graph.get(SIDE).parent_keys
    sensor = defs.resolve_sensor_def(SENSOR_NAME)
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    targets = sensor.asset_selection.resolve(graph)
    assert targets == {SCALED, SUMMARY, SHIFTED, SIDE, REPORT}  # not static, not the feed


def test_observing_records_the_release_as_data_version_and_in_the_history(instance):
    defs = resource_defs.defs
    feed_asset = next(a for a in defs.assets if getattr(a, "key", None) == FEED)
    result = _compat.observe([feed_asset], instance=instance, resources=defs.resources)
    assert result.success
    record = instance.fetch_observations(FEED, limit=1).records[0].asset_observation
    meta = record.metadata
    assert meta["further/releases"].value == {
        "dag_res.feed(name='a')": "r1",
        "dag_res.feed(name='b')": "r1",
    }
    assert meta["further/stored"].value is False
    version = record.tags["dagster/data_version"]
    assert version.startswith("releases:")
    observed = Session(progress=False).observations("dag_res.feed")
    assert [(o["release"], o["source"]) for o in observed] == [("r1", "dagster")]

    RELEASES["b"] = "r2"
    _compat.observe([feed_asset], instance=instance, resources=defs.resources)
    again = instance.fetch_observations(FEED, limit=1).records[0].asset_observation
    assert again.tags["dagster/data_version"] != version


def test_a_single_instance_resource_reports_its_release_as_the_data_version(instance):
    defs = resource_defs.summary_defs  # only feed(name=a) under summary
    result = Ticker(defs, instance).tick()
    (event,) = result.asset_events
    assert event.asset_key == FEED and event.tags["dagster/data_version"] == "r1"


def test_sensor_requests_exactly_what_a_changed_release_reaches(instance, calls):
    defs = resource_defs.summary_defs
    Session(progress=False).call("dag_res.summary")  # everything stored at r1
    ticker = Ticker(defs, instance)

    first = ticker.tick()  # first sight of r1: it reaches only stored results
    assert first.run_requests == [] and "every instance it reaches is stored" in _skip(first)
    unchanged = ticker.tick()
    assert unchanged.run_requests == [] and _skip(unchanged) == "no release changed"
    assert unchanged.asset_events == []  # nothing new to report either

    RELEASES["a"] = "r2"
    changed = ticker.tick()
    (request,) = changed.run_requests
    keys = _partitions(defs, SCALED)
    assert request.asset_selection == [SCALED, SUMMARY]
    assert request.tags[RANGE_START] == keys[0] and request.tags[RANGE_END] == keys[-1]
    assert request.tags["further/partitions"] == ",".join(keys)
    assert request.run_key and "r2" in request.tags["further/releases"]
    (event,) = changed.asset_events
    assert event.tags["dagster/data_version"] == "r2"

    # re-observing the same release (the run has not even happened yet) requests nothing
    assert ticker.tick().run_requests == []


def test_sensor_requests_only_partitions_not_stored(instance):
    defs = resource_defs.summary_defs
    Session(progress=False).call("dag_res.summary")
    ticker = Ticker(defs, instance)
    ticker.tick()
    RELEASES["a"] = "r2"
    # a notebook already computed the middle partition with the new release
    Session(progress=False).call("dag_res.scaled", factor=2)
    (request,) = ticker.tick().run_requests
    keys = _partitions(defs, SCALED)
    assert request.tags["further/partitions"] == f"{keys[0]},{keys[2]}"
    assert (request.tags[RANGE_START], request.tags[RANGE_END]) == (keys[0], keys[2])

    RELEASES["a"] = "r1"  # back to a release whose results are all stored
    back = ticker.tick()
    assert back.run_requests == [] and "every instance it reaches is stored" in _skip(back)


def test_a_release_reaching_one_unpartitioned_branch_requests_only_it(instance):
    defs = resource_defs.defs
    Session(progress=False).call("dag_res.report")
    ticker = Ticker(defs, instance)
    assert ticker.tick().run_requests == []
    RELEASES["b"] = "r2"
    (request,) = ticker.tick().run_requests
    assert request.asset_selection == [SIDE, REPORT]
    assert request.partition_key is None and RANGE_START not in request.tags
    assert ticker.tick().run_requests == []


def test_a_release_reaching_two_partitions_definitions_requests_one_backfill(instance):
    defs = resource_defs.defs
    Session(progress=False).call("dag_res.report")
    ticker = Ticker(defs, instance)
    ticker.tick()
    RELEASES["a"] = "r3"
    (request,) = ticker.tick().run_requests
    assert request.requires_backfill_daemon()
    pairs = {
        (p.asset_key, p.partition_key)
        for p in request.asset_graph_subset.iterate_asset_partitions()
    }
    expected = {(SCALED, k) for k in _partitions(defs, SCALED)}
    expected |= {(SHIFTED, k) for k in _partitions(defs, SHIFTED)}
    expected |= {(SUMMARY, None), (REPORT, None)}
    assert pairs == expected  # not side, static or the feed


def _asset_steps(events):
    """The steps started (asset steps, not the shipped asset checks' steps)."""
    return [
        e.step_key
        for e in events
        if e.event_type_value == "STEP_START" and not e.step_key.endswith("further_checks")
    ]


def _run(instance, attribute, selection, tags):
    from dagster._core.definitions.reconstruct import ReconstructableRepository

    repo = ReconstructableRepository.for_module(
        "tests.dagster.resource_defs", attribute, working_directory=str(ROOT)
    )
    job = repo.get_reconstructable_job("__ASSET_JOB")
    with dg.execute_job(job, instance=instance, asset_selection=selection, tags=tags) as result:
        assert result.success
        return [e for e in result.all_events]


def test_the_requested_run_recomputes_exactly_the_new_instances(instance, calls):
    defs = resource_defs.summary_defs
    Session(progress=False).call("dag_res.summary")
    ticker = Ticker(defs, instance)
    ticker.tick()
    RELEASES["a"] = "r2"
    (request,) = ticker.tick().run_requests
    before = calls.count()
    events = _run(instance, "summary_defs", request.asset_selection, dict(request.tags))
    started = sorted(_asset_steps(events))
    assert started == ["dag_res__scaled", "dag_res__summary"]
    assert calls.count("feed") == 2 and calls.count("scaled") == 6  # one new feed read
    assert calls.count() - before == 1 + 3 + 1
    mats = [
        e.event_specific_data.materialization
        for e in events
        if e.event_type_value == "ASSET_MATERIALIZATION"
    ]
    summary = next(m for m in mats if m.asset_key == SUMMARY)
    assert list(summary.metadata["further/releases"].value.values()) == ["r2"]
    # old and new results are both stored and addressable
    session = Session(progress=False)
    assert session.call("dag_res.summary").totals == [60, 120, 180]
    assert session.call("dag_res.summary", freshness="release:r1").totals == [6, 12, 18]


def test_the_run_tag_overrides_freshness_for_the_whole_run(instance, calls):
    Session(progress=False).call("dag_res.summary")  # r1 stored
    RELEASES["a"] = "r2"
    events = _run(instance, "summary_defs", [SUMMARY], {"further/freshness": "present"})
    # present: the stored r1 is used, so the whole step is a cache hit and nothing is read
    assert _asset_steps(events) == []
    assert calls.count("feed") == 1
    events = _run(
        instance, "summary_defs", [SUMMARY], {"further/freshness": '{"dag_res.feed": "latest"}'}
    )
    assert _asset_steps(events) == ["dag_res__summary"]
    assert calls.count("feed") == 2


def test_a_bad_freshness_tag_fails_the_step_with_the_fix(instance):
    defs = resource_defs.summary_defs
    summary = next(a for a in defs.assets if getattr(a, "key", None) == SUMMARY)
    result = dg.materialize(
        [summary],
        instance=instance,
        resources=defs.resources,
        tags={"further/freshness": "release:nope"},
        raise_on_error=False,
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    text = str(failure.event_specific_data.error)
    assert "neither stored nor current" in text and "dag_res.feed" in text


def test_run_config_freshness_is_read_by_the_step(instance, calls):
    defs = resource_defs.summary_defs
    Session(progress=False).call("dag_res.summary")
    RELEASES["a"] = "r2"
    summary = next(a for a in defs.assets if getattr(a, "key", None) == SUMMARY)
    result = dg.materialize(
        [summary],
        instance=instance,
        resources=defs.resources,
        run_config={"resources": {"further": {"config": {"freshness": "present"}}}},
    )
    assert result.success
    meta = instance.get_latest_materialization_event(SUMMARY).asset_materialization.metadata
    assert meta["further/cache"].value == "hit"
    assert list(meta["further/releases"].value.values()) == ["r1"]
    assert calls.count("feed") == 1


def test_the_store_is_shared_with_the_history_of_observations(instance):
    defs = resource_defs.summary_defs
    ticker = Ticker(defs, instance)
    ticker.tick()
    RELEASES["a"] = "r2"
    ticker.tick()
    seen = Session(progress=False).observations("dag_res.feed")
    assert [(o["release"], o["source"]) for o in seen] == [("r1", "sensor"), ("r2", "sensor")]
    assert ArtifactStore().root.joinpath(".releases", "dag_res", "feed").is_dir()


def test_the_sensor_cursor_names_instances_and_a_restart_reports_no_change(instance):
    defs = resource_defs.summary_defs
    ticker = Ticker(defs, instance)
    ticker.tick()
    cursor = json.loads(ticker.cursor)
    assert cursor["releases"] == {"dag_res.feed": "r1"}  # readable, not a hash
    # Dagster observed r1 (the UI's Observe, or an earlier tick); a restarted sensor (no
    # cursor) starts from that observation: nothing changed, nothing to report
    feed_asset = next(a for a in defs.assets if getattr(a, "key", None) == FEED)
    _compat.observe([feed_asset], instance=instance, resources=defs.resources)
    restarted = Ticker(defs, instance)
    result = restarted.tick()
    assert not result.run_requests and _skip(result) == "no release changed"


def _record(instance, result):
    """Record a SensorResult's asset events the way the daemon does (in order, runless)."""
    for event in result.asset_events:
        instance.report_runless_asset_event(event)


def _latest(instance, key, pk):
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[pk]), limit=1
    ).records
    return records[0].asset_materialization


def _statuses(instance, defs):
    from dagster._utils.test.data_versions import get_stale_status_resolver

    resolver = get_stale_status_resolver(instance, list(defs.assets))
    out = {}
    for key in (SCALED, SUMMARY):
        asset = location_of(defs).asset_by_key[key]
        pks = asset.partitions.keys if asset.partitions is not None else [None]
        for pk in pks:
            out[(key.to_user_string(), pk)] = resolver.get_status(key, pk)
    return out


def _hits(instance, after_id=0):
    """The cache hits the sensor recorded (runless materializations), oldest first."""
    records = (
        instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=SCALED), limit=100).records
        + instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=SUMMARY), limit=100
        ).records
    )
    found = [r for r in records if not r.event_log_entry.run_id and r.storage_id > after_id]
    return sorted(found, key=lambda r: r.storage_id)


def _last_id(instance):
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=SUMMARY), limit=1
    ).records
    return records[0].storage_id if records else 0


def test_a_switch_back_to_a_stored_release_reports_hits_and_marks_nothing_stale(instance, calls):
    from dagster._core.definitions.data_version import StaleStatus

    defs = resource_defs.summary_defs
    Session(progress=False).call("dag_res.summary")  # r1 stored, never materialized in Dagster
    ticker = Ticker(defs, instance)
    first = ticker.tick()  # first sight of r1: all stored, so Dagster is told with hits
    assert first.run_requests == [] and "(4 cache hit(s) reported)" in _skip(first)
    hits = [r.asset_materialization for r in _hits(instance)]
    assert len(hits) == 4  # three scaled partitions, then summary
    assert hits[-1].asset_key == SUMMARY
    assert all(h.metadata["further/cache"].value == "hit" for h in hits)
    for h in hits:
        assert h.tags["dagster/data_version"] == h.metadata["further/logic_key"].value
    _record(instance, first)  # the tick's observation of r1
    assert set(_statuses(instance, defs).values()) == {StaleStatus.FRESH}

    RELEASES["a"] = "r2"
    changed = ticker.tick()
    _record(instance, changed)
    statuses = _statuses(instance, defs)
    # Dagster marks stale what the new observation reaches directly (summary's own inputs,
    # the scaled partitions, have not changed in Dagster yet)
    assert {k: v for k, v in statuses.items() if k[0] == "dag_res/scaled"} == {
        ("dag_res/scaled", pk): StaleStatus.STALE for pk in _partitions(defs, SCALED)
    }
    (request,) = changed.run_requests
    _run(instance, "summary_defs", request.asset_selection, dict(request.tags))
    assert set(_statuses(instance, defs).values()) == {StaleStatus.FRESH}
    r2_versions = {pk: _latest(instance, SCALED, pk).tags for pk in _partitions(defs, SCALED)}

    RELEASES["a"] = "r1"  # back to a release whose results are all stored
    computed = calls.count()
    before = _last_id(instance)
    back = ticker.tick()
    assert back.run_requests == [] and "every instance it reaches is stored" in _skip(back)
    assert "4 cache hit(s)" in _skip(back)
    (observation,) = back.asset_events
    assert isinstance(observation, dg.AssetObservation)
    records = _hits(instance, before)
    assert [(r.asset_key, r.partition_key) for r in records] == [
        *((SCALED, pk) for pk in _partitions(defs, SCALED)),
        (SUMMARY, None),
    ]
    hits = [r.asset_materialization for r in records]
    assert hits[-1].tags["dagster/input_data_version/dag_res/scaled"].startswith("partitions:")
    assert hits[0].tags["dagster/input_data_version/dag_res/feed"] == "r1"
    # the summary points at the scaled hits recorded just before it
    pointer = hits[-1].tags["dagster/input_event_pointer/dag_res/scaled"]
    assert int(pointer) == records[-2].storage_id
    assert list(hits[-1].metadata["further/releases"].value.values()) == ["r1"]
    _record(instance, back)
    assert calls.count() == computed  # nothing computed, nothing read
    statuses = _statuses(instance, defs)
    assert set(statuses.values()) == {StaleStatus.FRESH}, statuses
    for pk, tags in r2_versions.items():
        now = _latest(instance, SCALED, pk)
        assert now.tags["dagster/data_version"] != tags["dagster/data_version"]
        assert now.metadata["further/cache"].value == "hit"
    # nothing new: the next tick reports nothing
    again = ticker.tick()
    assert again.asset_events == [] and again.run_requests == []
    assert _hits(instance, _last_id(instance)) == []


def test_hits_of_results_never_recorded_in_dagster_point_at_real_records(instance):
    """A switch to results a Session stored (Dagster never recorded them at that version):
    the dependent's input pointer is the record of each partition it rests on, so a later
    change of one of them shows as stale (a null pointer would hide it for good)."""
    from dagster._core.definitions.data_version import StaleStatus

    defs = resource_defs.summary_defs
    Session(progress=False).call("dag_res.summary")
    ticker = Ticker(defs, instance)
    first = ticker.tick()
    _record(instance, first)
    summary = instance.get_latest_materialization_event(SUMMARY).asset_materialization
    assert summary.tags["dagster/input_event_pointer/dag_res/scaled"] != _compat.NULL_EVENT_POINTER
    assert set(_statuses(instance, defs).values()) == {StaleStatus.FRESH}

    # a scaled partition changes in Dagster afterwards (another run, another code version)
    pk = _partitions(defs, SCALED)[1]
    instance.report_runless_asset_event(
        dg.AssetMaterialization(
            asset_key=SCALED, partition=pk, tags={"dagster/data_version": "edited"}
        )
    )
    from dagster._utils.test.data_versions import get_stale_status_resolver

    resolver = get_stale_status_resolver(instance, list(defs.assets))
    assert resolver.get_status(SUMMARY, None) == StaleStatus.STALE


def test_a_release_reaching_stored_and_missing_instances_records_the_stored_at_once(
    instance, calls
):
    """A notebook computed one partition with the new release: the sensor requests the others
    and tells Dagster about the stored one at once (the requested range does not cover it)."""
    from dagster._core.definitions.data_version import StaleStatus

    defs = resource_defs.summary_defs
    Session(progress=False).call("dag_res.summary")
    ticker = Ticker(defs, instance)
    _record(instance, ticker.tick())  # r1: all stored, recorded as hits
    keys = _partitions(defs, SCALED)
    RELEASES["a"] = "r2"
    Session(progress=False).call("dag_res.scaled", factor=1)  # the first partition, at r2
    changed = ticker.tick()
    (request,) = changed.run_requests
    assert (request.tags[RANGE_START], request.tags[RANGE_END]) == (keys[1], keys[2])
    assert "1 cache hit(s)" not in (_skip(changed) or "")  # a run was requested
    _record(instance, changed)  # the observation of r2
    hit = _latest(instance, SCALED, keys[0])
    assert hit.metadata["further/cache"].value == "hit"
    assert list(hit.metadata["further/releases"].value.values()) == ["r2"]
    statuses = _statuses(instance, defs)
    assert statuses[("dag_res/scaled", keys[0])] == StaleStatus.FRESH  # true before the run
    assert statuses[("dag_res/scaled", keys[1])] == StaleStatus.STALE
    assert statuses[("dag_res/scaled", keys[2])] == StaleStatus.STALE
    _run(instance, "summary_defs", request.asset_selection, dict(request.tags))
    assert set(_statuses(instance, defs).values()) == {StaleStatus.FRESH}


def test_current_shelf_life_asks_get_release_at_most_once_per_shelf_life(instance, monkeypatch):
    from further_dagster import build_definitions, current

    defs = build_definitions(
        resource_defs.dag_res,
        calls=[("dag_res.summary", {})],
        executor=resource_defs._in_process,
        freshness=current(3600),
    )
    asked = []
    original = resource_defs.Feed.get_release.__func__

    def counting(cls, specs):
        asked.append(specs.name)
        return original(cls, specs)

    monkeypatch.setattr(resource_defs.Feed, "get_release", classmethod(counting))
    ticker = Ticker(defs, instance)
    first = ticker.tick()  # nothing stored yet: asks, and requests the run
    assert asked == ["a"] and first.run_requests
    Session(progress=False).call("dag_res.summary")  # the run's results, stored at r1
    assert asked == ["a", "a"]  # the Session's own latest() asked again
    RELEASES["a"] = "r2"  # not noticed within the shelf life
    for _ in range(3):
        result = ticker.tick()
        assert result.run_requests == [] and result.asset_events == []
        assert _skip(result) == "no release changed"
    assert asked == ["a", "a"]  # the stored result and a fresh observation: no get_release
    # once the shelf life has passed, one tick asks once and sees the new release
    import datetime as dt

    from further_dagster.dagster.sensor import evaluate_releases

    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)
    expired = evaluate_releases(
        location_of(defs), ticker.cursor, clock=lambda: later, instance=instance
    )
    assert asked == ["a", "a", "a"] and expired.run_requests
    # (until r2's result is stored the policy asks on each tick: it reuses stored releases only)
    Session(progress=False).call("dag_res.summary")  # the requested run's results, at r2
    again = evaluate_releases(location_of(defs), expired.cursor, clock=lambda: later)
    assert len(asked) == 4 and not again.run_requests  # the Session asked, the sensor did not
