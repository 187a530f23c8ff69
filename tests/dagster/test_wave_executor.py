"""The default executor: steps in-process, the run's missing instances on the engine's pools.

The code location below is this module itself (`wave_defs`): two independent cells, one that
fails on demand with a dependent, and the dag_demo chain and sweep for results.
"""

import os
from pathlib import Path

import dagster as dg
import pytest

from further_dagster import Cell, Project, Req, Specs, build_definitions
from further_dagster.dagster import location_of
from tests.dagster import defs_module
from tests.engine.cells import record

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.dagster

waves_demo = Project("waves_demo", description="wave executor test project")


class Left(Cell, project=waves_demo):
    """An independent cell."""

    class Specs(Specs):
        n: int = 1

    contributions = {"value": int}

    def make(self):
        record("left", self.key)
        return {"value": self.specs.n}


class Flaky(Cell, project=waves_demo):
    """Fails while $WAVE_FAIL says so: `always`, or `once` (the first attempt only)."""

    contributions = {"value": int}

    def make(self):
        record("flaky", self.key)
        how = os.environ.get("WAVE_FAIL", "")
        marker = Path(os.environ.get("WAVE_FAIL_MARKER", "/nonexistent/marker"))
        if how == "always" or (how == "once" and not marker.exists()):
            if how == "once":
                marker.write_text("failed once")
            raise RuntimeError("flaky failed on purpose")
        return {"value": 7}


class Below(Cell, project=waves_demo):
    """Depends on the flaky cell."""

    req_cells = {"flaky": Req("flaky")}
    contributions = {"value": int}

    def make(self):
        record("below", self.key)
        return {"value": self.inputs["flaky"].value + 1}


wave_defs = build_definitions(
    waves_demo,
    jobs=[
        dg.define_asset_job(
            "retrying", selection="*", op_retry_policy=dg.RetryPolicy(max_retries=1)
        )
    ],
)

waves_watch = Project("waves_watch", description="a cell that watches its own run")


class Watch(Cell, project=waves_watch):
    """Waits (a bounded while) until its step's start is in the run's event log as another
    process sees it (a second instance on the same storage), and writes whether it was."""

    contributions = {"seen": bool}

    def make(self):
        import time

        seen = False
        with dg.DagsterInstance.from_config(os.environ["WAVE_WATCH_HOME"]) as reader:
            for _ in range(600):
                runs = reader.get_runs(limit=1)
                logs = reader.all_logs(runs[0].run_id) if runs else []
                if any(
                    e.dagster_event is not None
                    and e.dagster_event.event_type_value == "STEP_START"
                    and e.step_key == "waves_watch__watch"
                    for e in logs
                ):
                    seen = True
                    break
                time.sleep(0.1)
        Path(os.environ["WAVE_WATCH_OUT"]).write_text(str(seen))
        return {"seen": seen}


watch_defs = build_definitions(waves_watch)

LEFT = dg.AssetKey(["waves_demo", "left"])
FLAKY = dg.AssetKey(["waves_demo", "flaky"])
BELOW = dg.AssetKey(["waves_demo", "below"])


def _job(module, attribute, name="__ASSET_JOB"):
    # Dagster has no public way to make an asset job reconstructable outside a code location.
    from dagster._core.definitions.reconstruct import ReconstructableRepository

    repo = ReconstructableRepository.for_module(module, attribute, working_directory=str(ROOT))
    return repo.get_reconstructable_job(name)


def _run(instance, module, attribute, *, job="__ASSET_JOB", selection=None, **kwargs):
    with dg.execute_job(
        _job(module, attribute, job),
        instance=instance,
        asset_selection=selection,
        raise_on_error=False,
        **kwargs,
    ) as result:
        return result.success, list(result.all_events)


def _of(events, kind):
    return [e for e in events if e.event_type_value == kind]


def _range_tags():
    keys = location_of(defs_module.defs).asset_by_key[dg.AssetKey(["dag_demo", "power"])]
    keys = keys.partitions.keys
    return {
        "dagster/asset_partition_range_start": keys[0],
        "dagster/asset_partition_range_end": keys[-1],
    }


def _materializations(instance, key):
    records = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key), limit=50)
    return [r.event_log_entry.asset_materialization for r in records.records]


def test_steps_run_in_process_with_their_own_events(further_tmp_root, calls, dagster_instance):
    ok, events = _run(dagster_instance, "tests.dagster.defs_module", "defs", tags=_range_tags())
    assert ok
    waves = [e for e in _of(events, "ENGINE_EVENT") if "sent to the engine" in (e.message or "")]
    assert len(waves) == 1 and "5 missing instance(s) of 3 step(s)" in waves[0].message
    steps = ["dag_demo__src", "dag_demo__power", "dag_demo__summary"]
    assert [e.step_key for e in _of(events, "STEP_START")][:3] == steps
    assert {e.step_key for e in _of(events, "STEP_SUCCESS")} >= set(steps)
    assert len({e.pid for e in _of(events, "STEP_START")}) == 1  # one process for every step
    # one materialization per partition, each at its own logic key, computed (not a hit)
    mats = [e for e in _of(events, "ASSET_MATERIALIZATION") if e.step_key in steps]
    assert len(mats) == 1 + 3 + 1
    for event in mats:
        mat = event.event_specific_data.materialization
        assert mat.metadata["further/cache"].value == "miss"
        assert mat.tags["dagster/data_version"] == mat.metadata["further/logic_key"].value
    assert calls.count() == 5  # every make() once, by the engine
    consumer = dg.AssetKey(["dag_demo", "plain_consumer"])
    assert dagster_instance.get_latest_materialization_event(consumer) is not None


def test_results_equal_the_per_step_path(tmp_path, monkeypatch, calls):
    found = {}
    for steps in ("in_process", "multiprocess"):
        monkeypatch.setenv("FURTHER_ROOT", str(tmp_path / steps / "store"))
        with dg.instance_for_test(temp_dir=str(_mkdir(tmp_path / steps / "home"))) as instance:
            config = {"execution": {"config": {"steps": steps}}}
            ok, events = _run(
                instance, "tests.dagster.defs_module", "defs", tags=_range_tags(), run_config=config
            )
            assert ok
            waved = any("sent to the engine" in (e.message or "") for e in events)
            assert waved == (steps == "in_process")
            pids = {e.pid for e in _of(events, "STEP_START")}
            assert (len(pids) == 1) == (steps == "in_process")  # a process per step otherwise
            found[steps] = {
                key.to_user_string(): sorted(
                    (m.partition, m.tags["dagster/data_version"], m.metadata["further/cache"].value)
                    for m in _materializations(instance, key)
                )
                for key in location_of(defs_module.defs).asset_by_key
            }
            consumer = instance.get_latest_materialization_event(
                dg.AssetKey(["dag_demo", "plain_consumer"])
            )
            assert consumer is not None
    assert found["in_process"] == found["multiprocess"]


def _mkdir(path):
    path.mkdir(parents=True, exist_ok=True)
    return path


def test_a_failing_make_fails_its_step_and_skips_downstream_only(
    further_tmp_root, calls, dagster_instance, monkeypatch
):
    monkeypatch.setenv("WAVE_FAIL", "always")
    ok, events = _run(dagster_instance, __name__, "wave_defs")
    assert not ok
    failed = [e.step_key for e in _of(events, "STEP_FAILURE")]
    assert failed == ["waves_demo__flaky"]
    assert "flaky failed on purpose" in str(_of(events, "STEP_FAILURE")[0].event_specific_data)
    started = {e.step_key for e in _of(events, "STEP_START")}
    assert "waves_demo__below" not in started  # Dagster skipped it: its upstream failed
    assert {e.step_key for e in _of(events, "STEP_SUCCESS")} == {"waves_demo__left"}
    assert dagster_instance.get_latest_materialization_event(LEFT) is not None
    assert calls.count("left") == 1 and calls.count("below") == 0

    # the next run computes only what is missing
    monkeypatch.setenv("WAVE_FAIL", "")
    ok, events = _run(dagster_instance, __name__, "wave_defs")
    assert ok
    assert {e.step_key for e in _of(events, "STEP_START")} == {
        "waves_demo__flaky",
        "waves_demo__below",
    }
    assert calls.count("left") == 1 and calls.count("below") == 1


def test_a_retry_policy_retries_the_step(
    further_tmp_root, calls, dagster_instance, monkeypatch, tmp_path
):
    monkeypatch.setenv("WAVE_FAIL", "once")
    monkeypatch.setenv("WAVE_FAIL_MARKER", str(tmp_path / "failed_once"))
    ok, events = _run(dagster_instance, __name__, "wave_defs", job="retrying")
    assert ok
    retried = [e.step_key for e in _of(events, "STEP_UP_FOR_RETRY")]
    assert retried == ["waves_demo__flaky"]
    assert calls.count("flaky") == 2  # the engine's attempt, then the step's own retry
    assert calls.count("below") == 1
    latest = dagster_instance.get_latest_materialization_event(FLAKY).asset_materialization
    assert latest.metadata["further/cache"].value == "miss"
    assert latest.tags["dagster/data_version"] == latest.metadata["further/logic_key"].value


def test_the_stock_multiprocess_path_is_still_selectable(further_tmp_root, calls, dagster_instance):
    config = {"execution": {"config": {"steps": "multiprocess"}}}
    ok, events = _run(dagster_instance, __name__, "wave_defs", selection=[LEFT], run_config=config)
    assert ok
    messages = [e.message or "" for e in _of(events, "ENGINE_EVENT")]
    assert any("multiprocess executor" in m for m in messages)
    assert not any("sent to the engine" in m for m in messages)
    assert [e.step_key for e in _of(events, "STEP_SUCCESS")] == ["waves_demo__left"]
    assert calls.count("left") == 1


def test_a_step_waiting_for_the_engine_keeps_the_run_log_visible(
    tmp_path, monkeypatch, further_tmp_root, calls
):
    """The run's step events are stored in batches (SQLite), but never held while a step waits
    for its instances: the UI (another process on the same storage) sees the waiting step
    started, and the step records what the engine computed once it finished."""
    home = _mkdir(tmp_path / "home")
    monkeypatch.setenv("WAVE_WATCH_HOME", str(home))
    monkeypatch.setenv("WAVE_WATCH_OUT", str(tmp_path / "seen"))
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        ok, events = _run(instance, __name__, "watch_defs")
        assert ok
        assert (tmp_path / "seen").read_text() == "True"
        stored = [
            e.dagster_event.event_type_value
            for e in instance.all_logs(instance.get_runs(limit=1)[0].run_id)
            if e.dagster_event is not None
        ]
        for kind in ("STEP_START", "ASSET_MATERIALIZATION", "STEP_SUCCESS", "PIPELINE_SUCCESS"):
            assert kind in stored
