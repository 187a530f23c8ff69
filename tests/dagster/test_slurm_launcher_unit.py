"""`SlurmRunLauncher` with `FakeSlurmClient` and a real Dagster instance (as dagster-k8s tests
its launcher: a real `instance_for_test`, only the client injected). The fake never runs the
run worker command; tests/slurm/test_dagster_slurm.py launches real run workers on Slurm."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from dagster._core.launcher import LaunchRunContext
from dagster._core.test_utils import create_run_for_test

from further_dagster.dagster.slurm_launcher import SlurmRunLauncher
from further_dagster.dagster.tags import (
    ARRAY_TAG_PREFIX,
    FOLDER_TAG,
    JOB_ID_TAG,
    LOCAL_PREFIX,
    SLURM_TAG,
    STDERR_TAG,
    STDOUT_TAG,
    STEP_TAG_PREFIX,
)
from further_dagster.errors import SlurmSubmissionError
from further_dagster.slurm import SlurmSpec, SubmititClient
from further_dagster.slurm.command import run_command
from further_dagster.testing.slurm import FakeSlurmClient

pytestmark = pytest.mark.dagster


@dg.op
def noop() -> None:
    return None


@dg.job
def noop_job() -> None:
    noop()


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as instance:
        yield instance


@pytest.fixture
def client() -> FakeSlurmClient:
    return FakeSlurmClient(run=False)  # the call would start a real run worker


def make_launcher(
    instance: dg.DagsterInstance, client: FakeSlurmClient, folder: Path, **spec: Any
) -> SlurmRunLauncher:
    launcher = SlurmRunLauncher(
        client=client, folder=str(folder), terminate_wait_s=2.0, **{"partition": "debug", **spec}
    )
    launcher.register_instance(instance)
    return launcher


def new_run(instance: dg.DagsterInstance, tags: dict[str, str] | None = None) -> dg.DagsterRun:
    origin = dg.reconstructable(noop_job).get_python_origin()
    run: dg.DagsterRun = create_run_for_test(
        instance, job_name="noop_job", job_code_origin=origin, tags=tags or {}
    )
    return run


def launch(launcher: SlurmRunLauncher, run: dg.DagsterRun) -> dg.DagsterRun:
    launcher.launch_run(LaunchRunContext(dagster_run=run, workspace=None))
    after = launcher._instance.get_run_by_id(run.run_id)
    assert after is not None
    return after


def test_the_default_client_is_the_real_one(tmp_path: Path) -> None:
    assert isinstance(SlurmRunLauncher(folder=str(tmp_path)).client, SubmititClient)


def test_launch_submits_the_run_worker_with_defaults_under_the_run_tag(
    instance: dg.DagsterInstance, client: FakeSlurmClient, tmp_path: Path
) -> None:
    launcher = make_launcher(instance, client, tmp_path, time_min=30)
    run = launch(launcher, new_run(instance, {SLURM_TAG: json.dumps({"cpus": 4})}))
    (submission,) = client.submissions
    assert submission.spec == SlurmSpec(partition="debug", time_min=30, cpus=4)
    assert submission.folder == tmp_path / run.run_id / "run"
    assert submission.job_name == f"dagster-run-{run.run_id[:8]}"
    ((call),) = submission.calls
    assert call.fn is run_command
    argv, env = call.args
    assert env is None
    assert argv[1:3] == ["-m", "further_dagster.dagster.worker"]
    assert argv[3:5] == ["api", "execute_run"] and run.run_id in " ".join(argv)
    job = client.job(submission.folder, "1000")
    assert {k: run.tags[k] for k in (JOB_ID_TAG, STDOUT_TAG, STDERR_TAG, FOLDER_TAG)} == {
        JOB_ID_TAG: "1000",
        STDOUT_TAG: str(job.stdout),
        STDERR_TAG: str(job.stderr),
        FOLDER_TAG: str(tmp_path / run.run_id),
    }
    (event,) = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT)
    assert "Launched the run worker as Slurm job 1000 in " in event.message


def test_a_refused_spec_falls_back(
    instance: dg.DagsterInstance, client: FakeSlurmClient, tmp_path: Path
) -> None:
    client.refuse(partition="high")
    launcher = make_launcher(
        instance, client, tmp_path, partition="high", fallbacks=[{"partition": "debug"}]
    )
    run = launch(launcher, new_run(instance))
    assert [r[1].partition for r in client.refusals] == ["high"]
    assert [s.spec.partition for s in client.submissions] == ["debug"]
    assert run.tags[JOB_ID_TAG] == "1000"


def test_every_spec_refused_fails_the_launch_with_sbatch_errors(
    instance: dg.DagsterInstance, client: FakeSlurmClient, tmp_path: Path
) -> None:
    client.refuse("sbatch: error: invalid partition specified: nope")
    launcher = make_launcher(instance, client, tmp_path, partition="nope")
    run = new_run(instance)
    with pytest.raises(SlurmSubmissionError, match="invalid partition specified: nope"):
        launcher.launch_run(LaunchRunContext(dagster_run=run, workspace=None))
    after = instance.get_run_by_id(run.run_id)
    assert after is not None and JOB_ID_TAG not in after.tags


@pytest.mark.parametrize(
    ("state", "status"),
    [
        ("PENDING", "RUNNING"),
        ("RUNNING", "RUNNING"),
        ("COMPLETED", "SUCCESS"),
        ("FAILED", "FAILED"),
        ("TIMEOUT", "FAILED"),
        ("CANCELLED", "FAILED"),
        ("OUT_OF_MEMORY", "FAILED"),
    ],
)
def test_health_maps_the_job_state(
    instance: dg.DagsterInstance, client: FakeSlurmClient, tmp_path: Path, state: str, status: str
) -> None:
    launcher = make_launcher(instance, client, tmp_path)
    run = launch(launcher, new_run(instance))
    if state != "PENDING":
        client.set_state("1000", state)
    health = launcher.check_run_worker_health(run)
    assert (health.status.value, health.run_worker_id) == (status, "1000")
    if status == "FAILED":
        assert f"Slurm job 1000 for the run worker of {run.run_id}" in health.msg
        assert f"state {state}" in health.msg
        assert run.tags[STDOUT_TAG] in health.msg and run.tags[STDERR_TAG] in health.msg
    else:
        assert health.msg == state


def test_health_of_a_job_slurm_does_not_know_is_not_found(
    instance: dg.DagsterInstance, client: FakeSlurmClient, tmp_path: Path
) -> None:
    launcher = make_launcher(instance, client, tmp_path)
    health = launcher.check_run_worker_health(new_run(instance, {JOB_ID_TAG: "4242"}))
    assert health.status.value == "NOT_FOUND" and "4242" in health.msg


def test_a_client_error_is_an_unknown_transient_health(
    instance: dg.DagsterInstance, client: FakeSlurmClient, tmp_path: Path
) -> None:
    launcher = make_launcher(instance, client, tmp_path)
    run = launch(launcher, new_run(instance))
    client.hiccup()
    health = launcher.check_run_worker_health(run)
    assert (health.status.value, health.transient) == ("UNKNOWN", True)
    assert "sacct" in health.msg
    assert launcher.check_run_worker_health(run).status.value == "RUNNING"  # it passes


def test_terminate_cancels_every_job_the_run_tags_name(
    instance: dg.DagsterInstance, client: FakeSlurmClient, tmp_path: Path
) -> None:
    launcher = make_launcher(instance, client, tmp_path)
    run = launch(launcher, new_run(instance))
    step = client.submit(tmp_path, SlurmSpec(), print)  # what the step handler would submit
    array = client.submit_batch(tmp_path, SlurmSpec(), [(print, 1), (print, 2)])
    instance.add_run_tags(
        run.run_id,
        {
            f"{STEP_TAG_PREFIX}a": step.job_id,
            f"{STEP_TAG_PREFIX}b": f"{LOCAL_PREFIX}123@elsewhere",
            f"{ARRAY_TAG_PREFIX}b": array[0].array_id,
        },
    )
    assert launcher.terminate(run.run_id)
    assert client.cancelled == ["1000", "1001", "1002"]
    assert set(client.states(["1000", "1001", "1002"]).values()) == {"CANCELLED"}
    after = instance.get_run_by_id(run.run_id)
    assert after is not None and after.status == dg.DagsterRunStatus.CANCELED
    assert not launcher.terminate(run.run_id)  # finished: nothing to do
