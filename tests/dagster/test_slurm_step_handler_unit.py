"""The Slurm step handler with `FakeSlurmClient` and a real Dagster instance.

Real jobs run in tests/slurm/test_dagster_slurm.py; here the client is the fake (as dagster-k8s
unit-tests its step handler), so routing, run tags, the jobs' specs, health and the cached path
are checked in seconds. A step routed as one job runs `dagster api execute_step` in a thread of
the test process; a fan-out step runs next to the run worker and submits its job array to the
fake of its own process.
"""

from pathlib import Path
from types import SimpleNamespace

import dagster as dg
import pytest

from further_dagster.dagster import location_of
from further_dagster.dagster.slurm_step_handler import SlurmStepHandler, route_for
from further_dagster.slurm import SlurmSpec
from further_dagster.testing.slurm import FakeSlurmClient
from tests.dagster import fake_slurm_defs
from tests.dagster.defs_module import Power, Src

pytestmark = pytest.mark.dagster

ROOT = Path(__file__).resolve().parents[2]
SRC = dg.AssetKey(["dag_demo", "src"])
POWER = dg.AssetKey(["dag_demo", "power"])
SUMMARY = dg.AssetKey(["dag_demo", "summary"])


@pytest.fixture
def instance(tmp_path):
    with dg.instance_for_test() as inst:
        yield inst


def _run(instance, tags=None, slurm=None):
    from dagster._core.definitions.reconstruct import ReconstructableRepository

    repo = ReconstructableRepository.for_module(
        "tests.dagster.fake_slurm_defs", "defs", working_directory=str(ROOT)
    )
    keys = location_of(fake_slurm_defs.defs).asset_by_key[POWER].partitions.keys
    run_tags = {
        "dagster/asset_partition_range_start": keys[0],
        "dagster/asset_partition_range_end": keys[-1],
        **(tags or {}),
    }
    config = {"check_health_interval_s": 1, "poll_interval_s": 0.1, **(slurm or {})}
    with dg.execute_job(
        repo.get_reconstructable_job("__ASSET_JOB"),
        instance=instance,
        asset_selection=[SRC, POWER, SUMMARY],
        tags=run_tags,
        # the step handler is `steps: multiprocess`; the default sends the run to Slurm in one
        # pass (tests/dagster/test_slurm_waves_unit.py)
        run_config={"execution": {"config": {"steps": "multiprocess", "slurm": config}}},
        raise_on_error=False,
    ) as result:
        return result.success, result.run_id


def test_routes_one_job_per_single_instance_step_and_one_local_fan_out(
    instance, further_tmp_root, calls
):
    fake: FakeSlurmClient = fake_slurm_defs.FAKE
    before = len(fake.submissions)
    ok, run_id = _run(instance, slurm={"partition": "debug", "time_min": 7})
    assert ok
    tags = instance.get_run_by_id(run_id).tags
    assert tags["further/slurm_route/dag_demo__src"] == "job"
    assert tags["further/slurm_route/dag_demo__summary"] == "job"
    assert tags["further/slurm_route/dag_demo__power"] == "local"
    assert tags["further/slurm_step/dag_demo__power"].startswith("local:")
    # the fan-out step submitted its three instances as one array, recorded in the run's tags
    assert len(tags["further/slurm_array/dag_demo__power"].split(",")) == 1
    jobs = fake.submissions[before:]
    assert [s.job_name.rsplit("-", 2)[1] for s in jobs] == ["dag_demo__src", "dag_demo__summary"]
    assert {tags["further/slurm_step/dag_demo__src"]} == set(jobs[0].job_ids)
    # executor run config is the layer above the (absent) launcher defaults
    assert all(s.spec.partition == "debug" and s.spec.time_min == 7 for s in jobs)
    assert calls.count("src") == 1 and calls.count("power") == 3 and calls.count("summary") == 1

    # everything is stored: the second run submits nothing and starts no step
    ok, _ = _run(instance)
    assert ok and len(fake.submissions) == before + 2


def test_route_follows_the_cell_mode_and_the_missing_count():
    base = SlurmSpec(partition="debug")
    assert route_for(Src, 1, base).kind == "job"
    assert route_for(Power, 3, base).kind == "local"
    assert route_for(None, 0, base).kind == "job"

    class Inline(Power):  # same cell, asked to run inline: not worth a Slurm job
        in_parallel = False

    assert route_for(Inline, 1, base).reason == "cell mode INLINE"


def test_health_follows_the_job_state_and_names_the_logs(instance):
    from dagster._core.test_utils import create_run_for_test

    fake = FakeSlurmClient(run=False)
    job = fake.submit(Path("/tmp/unused"), SlurmSpec(), print, "x", job_name="j")
    run = create_run_for_test(instance, job_name="j", tags={"further/slurm_step/s": job.job_id})
    handler = SlurmStepHandler(location_of(fake_slurm_defs.defs), {}, client=fake)
    ctx = SimpleNamespace(
        instance=instance,
        execute_step_args=SimpleNamespace(run_id=run.run_id, step_keys_to_execute=["s"]),
    )
    assert handler.check_step_health(ctx).is_healthy  # PENDING
    fake.set_state(job.job_id, "TIMEOUT")
    result = handler.check_step_health(ctx)
    assert not result.is_healthy
    assert job.job_id in result.unhealthy_reason and "timed out" in result.unhealthy_reason
    assert "logs:" in result.unhealthy_reason
