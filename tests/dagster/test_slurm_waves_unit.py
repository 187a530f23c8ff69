"""SLURM runs through the wave executor, with `FakeSlurmClient` and a real Dagster instance.

The steps run in the run's process (here the test process: `execute_job` runs in it) and the
run's missing instances go to Slurm in one pass: independent steps' instances in one array,
the dependent levels chained by Slurm dependencies. The fake runs each task in a thread of this
process. The code location is this module (`defs`):

    left   right          (independent, one array)
      |      |
    power (p = 1, 2, 3; swept by total)
       \\    /
       total              broken (fails while $WAVE_BROKEN is set) -> below
"""

import os

import dagster as dg
import pytest

from further_dagster import VAR, Cell, Project, Req, Specs, build_definitions
from further_dagster.dagster import location_of
from further_dagster.testing.slurm import FakeSlurmClient
from tests.dagster.test_wave_executor import _job
from tests.engine.cells import record

pytestmark = pytest.mark.dagster

slurm_waves = Project("slurm_waves", description="SLURM runs through the wave executor")


class Left(Cell, project=slurm_waves):
    """Independent."""

    class Specs(Specs):
        n: int = 3

    contributions = {"values": list}

    def make(self):
        record("left", self.key)
        return {"values": list(range(self.specs.n))}


class Right(Cell, project=slurm_waves):
    """Independent of left."""

    contributions = {"value": int}

    def make(self):
        record("right", self.key)
        return {"value": 10}


class Power(Cell, project=slurm_waves):
    """Each value of left to a power."""

    class Specs(Specs):
        p: int = 1

    req_cells = {"left": Req("left")}
    contributions = {"total": int}

    def make(self):
        record("power", self.key)
        return {"total": sum(v**self.specs.p for v in self.inputs["left"].values)}


class Total(Cell, project=slurm_waves):
    """The sweep over power, plus right."""

    req_cells = {"powers": Req("power", p=VAR([1, 2, 3])), "right": Req("right")}
    contributions = {"total": int}

    def make(self):
        record("total", self.key)
        return {"total": sum(p.total for p in self.inputs["powers"]) + self.inputs["right"].value}


class Broken(Cell, project=slurm_waves):
    """Fails while $WAVE_BROKEN is set."""

    contributions = {"value": int}

    def make(self):
        record("broken", self.key)
        if os.environ.get("WAVE_BROKEN"):
            raise RuntimeError("broken on purpose")
        return {"value": 1}


class Below(Cell, project=slurm_waves):
    """Depends on broken."""

    req_cells = {"broken": Req("broken")}
    contributions = {"value": int}

    def make(self):
        record("below", self.key)
        return {"value": self.inputs["broken"].value + 1}


FAKE = FakeSlurmClient()
defs = build_definitions(slurm_waves, mode="SLURM", slurm_client=FAKE)

MAIN = [dg.AssetKey(["slurm_waves", n]) for n in ("left", "right", "power", "total")]
BROKEN = [dg.AssetKey(["slurm_waves", n]) for n in ("broken", "below")]


def _range_tags():
    keys = location_of(defs).asset_by_key[MAIN[2]].partitions.keys
    return {
        "dagster/asset_partition_range_start": keys[0],
        "dagster/asset_partition_range_end": keys[-1],
    }


def _run(instance, selection, *, tags=None, steps=None):
    config = {"slurm": {"partition": "debug", "check_health_interval_s": 1, "poll_interval_s": 0.1}}
    if steps:
        config["steps"] = steps
    with dg.execute_job(
        _job(__name__, "defs"),
        instance=instance,
        asset_selection=selection,
        tags={**_range_tags(), **(tags or {})},
        run_config={"execution": {"config": config}},
        raise_on_error=False,
    ) as result:
        return result.success, list(result.all_events), result.run_id


def _stored(instance):
    """What each cell's latest materialization says it stored (its data version per asset and
    partition), for comparing two paths."""
    out = {}
    for key in MAIN:
        records = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key), limit=20)
        for r in records.records:
            mat = r.event_log_entry.asset_materialization
            out[(key.to_user_string(), mat.partition)] = mat.tags.get("dagster/data_version")
    return out


def _of(events, kind):
    return [e for e in events if e.event_type_value == kind]


def test_independent_steps_share_one_array_and_levels_chain_in_slurm(
    further_tmp_root, calls, dagster_instance
):
    before = len(FAKE.submissions)
    ok, events, run_id = _run(dagster_instance, MAIN)
    assert ok
    subs = FAKE.submissions[before:]
    # left and right (two steps) in ONE sbatch, the sweep in one, total in one, each level
    # submitted at once and chained by Slurm dependencies, not by this process waiting
    assert [len(s.job_ids) for s in subs] == [2, 3, 1]
    assert subs[0].dependency is None
    assert subs[1].dependency is not None and subs[2].dependency is not None
    assert all(s.spec.partition == "debug" for s in subs)  # the executor run config's layer
    assert all("/waves" in str(s.folder) and run_id in str(s.folder) for s in subs)
    assert calls.count("left") == calls.count("right") == calls.count("total") == 1
    assert calls.count("power") == 3
    tags = dagster_instance.get_run_by_id(run_id).tags
    assert tags["further/slurm_array/slurm_waves__left"] == subs[0].job_ids[0].split("_")[0]
    assert tags["further/slurm_array/slurm_waves__right"] == subs[0].job_ids[0].split("_")[0]
    assert tags["further/slurm_array/slurm_waves__power"] == subs[1].job_ids[0].split("_")[0]
    assert tags["further/slurm_array/slurm_waves__total"] == subs[2].job_ids[0]
    assert not any(t.startswith("further/slurm_route/") for t in tags)  # no step handler
    # the steps ran in this process and recorded their instances' events
    assert len(_of(events, "STEP_SUCCESS")) == 4
    assert len(_of(events, "ASSET_MATERIALIZATION")) == 1 + 1 + 3 + 1
    # each sbatch is in the run's log, naming its steps (written from the engine's thread)
    logged = [
        e.message
        for e in dagster_instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT)
        if "to Slurm as" in e.message
    ]
    assert len(logged) == 3
    assert "slurm_waves__left" in logged[0] and "slurm_waves__right" in logged[0]

    # everything stored: nothing is submitted and no step starts
    ok, events, _ = _run(dagster_instance, MAIN)
    assert ok and len(FAKE.submissions) == before + 3 and _of(events, "STEP_START") == []


def test_results_equal_the_per_step_path(
    further_tmp_root, calls, dagster_instance, tmp_path, monkeypatch
):
    ok, _, _ = _run(dagster_instance, MAIN)
    assert ok
    waves = _stored(dagster_instance)
    monkeypatch.setenv("FURTHER_ROOT", str(tmp_path / "per_step_store"))
    with dg.instance_for_test() as other:
        before = len(FAKE.submissions)
        ok, _, run_id = _run(other, MAIN, steps="multiprocess")
        assert ok
        tags = other.get_run_by_id(run_id).tags
        assert tags["further/slurm_route/slurm_waves__left"] == "job"  # the step handler
        per_step = _stored(other)
        assert len(FAKE.submissions) - before == 3  # left, right, total: one job per step
    assert waves == per_step and len(waves) == 6


def test_cached_instances_are_never_submitted(further_tmp_root, calls, dagster_instance):
    ok, _, _ = _run(dagster_instance, MAIN[:1], tags={"further/mode": "INLINE"})
    assert ok and calls.count("left") == 1
    before = len(FAKE.submissions)
    ok, _, _ = _run(dagster_instance, MAIN)
    assert ok
    subs = FAKE.submissions[before:]
    # left is stored, so the sweep is ready with right: one array of both steps, then total
    assert [len(s.job_ids) for s in subs] == [4, 1]
    assert calls.count("left") == 1


def test_a_failing_instance_fails_its_step_and_skips_downstream(
    further_tmp_root, calls, dagster_instance, monkeypatch
):
    monkeypatch.setenv("WAVE_BROKEN", "1")
    ok, events, _ = _run(dagster_instance, [*BROKEN, MAIN[1]])
    assert not ok
    (failure,) = _of(events, "STEP_FAILURE")
    assert failure.step_key == "slurm_waves__broken"
    assert "broken on purpose" in failure.event_specific_data.error.to_string()
    assert "slurm_waves__below" not in {e.step_key for e in _of(events, "STEP_START")}
    assert [e.step_key for e in _of(events, "STEP_SUCCESS")] == ["slurm_waves__right"]
    assert calls.count("below") == 0 and calls.count("right") == 1
