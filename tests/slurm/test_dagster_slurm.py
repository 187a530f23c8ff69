"""Dagster on the real Slurm cluster: the run launcher, the step executor and Slurm's events.

Every test submits real jobs (tests/slurm/conftest.py starts the cluster). Runs use a real
instance on SQLite (under the test's tmp dir, on the one node's filesystem) or PostgreSQL,
and the store under `further_tmp_root`; both reach the jobs through the exported environment.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml

from further_dagster.dagster import location_of
from further_dagster.dagster.slurm_schema import job_ids_in_tags
from further_dagster.dagster.tags import JOB_ID_TAG, STDERR_TAG, STDOUT_TAG
from further_dagster.slurm import SlurmSpec, SubmititClient
from tests.slurm import slurm_project

pytestmark = pytest.mark.slurm

SLURM = SubmititClient()
cancel, slurm_state, submit_with_fallbacks = SLURM.cancel, SLURM.state, SLURM.submit

REPO = Path(__file__).resolve().parents[2]
# Fast polling for tests: Slurm state every second, the event log every 0.2 s.
FAST = {"execution": {"config": {"slurm": {"check_health_interval_s": 1, "poll_interval_s": 0.2}}}}
# The Slurm step handler (a job per step, a fanning-out step as one array); without it a SLURM
# run goes to Slurm in one pass (tests/slurm/test_dagster_slurm_waves.py).
PER_STEP = {"execution": {"config": {**FAST["execution"]["config"], "steps": "multiprocess"}}}


def key(name: str) -> dg.AssetKey:
    return dg.AssetKey(["slurm_demo", name])


def range_tags(name: str) -> dict[str, str]:
    keys = location_of(slurm_project.defs).asset_by_key[key(name)].partitions.keys
    return {
        "dagster/asset_partition_range_start": keys[0],
        "dagster/asset_partition_range_end": keys[-1],
    }


def run_assets(
    instance: dg.DagsterInstance,
    names: list[str],
    tags: dict[str, str] | None = None,
    run_config: dict[str, Any] | None = None,
) -> tuple[bool, list[Any], str]:
    from dagster._core.definitions.reconstruct import ReconstructableRepository

    repo = ReconstructableRepository.for_module(
        "tests.slurm.slurm_project", "defs", working_directory=str(REPO)
    )
    job = repo.get_reconstructable_job("__ASSET_JOB")
    with dg.execute_job(
        job,
        instance=instance,
        asset_selection=[key(n) for n in names],
        tags=tags or {},
        run_config=run_config or FAST,
        raise_on_error=False,
    ) as result:
        return result.success, list(result.all_events), result.run_id


@pytest.fixture
def calls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[], list[dict[str, Any]]]:
    path = tmp_path / "calls.jsonl"
    monkeypatch.setenv("FURTHER_TEST_CALLS", str(path))

    def read() -> list[dict[str, Any]]:
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines()]

    return read


@pytest.fixture
def started(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The marker `slow` touches when its make() starts."""
    marker = tmp_path / "slow-started"
    monkeypatch.setenv("FURTHER_TEST_STARTED", str(marker))
    return marker


def sbatch_calls() -> set[str]:
    """Every submission accounting knows (job ids, an array counted once by its parent id),
    read once nothing is queued and accounting has caught up with earlier tests' jobs."""

    def read() -> set[str]:
        return {line.split("_")[0] for line in accounting("JobID")}

    def settled() -> tuple[set[str]] | None:  # a tuple: an empty set (no job yet) is an answer
        queued = subprocess.run(["squeue", "-h"], capture_output=True, text=True).stdout
        first = read()
        time.sleep(0.5)
        return (first,) if not queued.strip() and read() == first else None

    return eventually(settled, 30, "Slurm accounting to settle")[0]


def accounting(field: str) -> list[str]:
    """One sacct field of every job accounting knows (array tasks as `<parent>_<i>`)."""
    out = subprocess.run(
        ["sacct", "-a", "-X", "-n", "-P", "-o", field, "-S", "2000-01-01"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [line for line in out.split() if line.strip()]


def job_names_containing(fragment: str) -> list[str]:
    """The names of every job accounting knows that contain `fragment`."""
    return [name for name in accounting("JobName%200") if fragment in name]


def in_queue(job_ids: list[str]) -> list[str]:
    if not job_ids:
        return []
    out = subprocess.run(
        ["squeue", "-h", "-r", "-o", "%i|%T"], capture_output=True, text=True, check=True
    ).stdout
    parents = {j.split("_")[0] for j in job_ids}
    return [line for line in out.split() if line.split("|")[0].split("_")[0] in parents]


def eventually(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.2)


def in_background(action: Callable[[], None]) -> threading.Thread:
    thread = threading.Thread(target=action, daemon=True)
    thread.start()
    return thread


def failures(events: list[Any]) -> list[str]:
    out = []
    for event in events:
        if event.event_type_value == "STEP_FAILURE":
            error = event.event_specific_data.error
            out.append(f"{event.step_key}: {error.to_string() if error else event.message}")
    return out


# --- the step executor ------------------------------------------------------------------


def test_cells_go_to_their_partitions_and_a_sweep_is_one_job_array(
    slurm_cluster, further_tmp_root, calls, dagster_instance
):
    before = sbatch_calls()
    ok, events, run_id = run_assets(
        dagster_instance, ["prep", "train", "summary", "urgent"], range_tags("train"), PER_STEP
    )
    assert ok, failures(events)
    rows = {(r["cell"], r["key"]): r for r in calls()}
    by_cell: dict[str, list[dict[str, Any]]] = {}
    for row in rows.values():
        by_cell.setdefault(row["cell"], []).append(row)
    assert [r["partition"] for r in by_cell["prep"]] == ["debug"]
    assert [r["partition"] for r in by_cell["urgent"]] == ["high"]
    trains = by_cell["train"]
    assert len(trains) == 3 and {r["partition"] for r in trains} == {"gpu"}
    assert all(r["gpus"] not in (None, "") for r in trains)  # each task got a (fake) GPU
    assert len({r["array_job"] for r in trains}) == 1  # ONE sbatch for the sweep
    assert by_cell["summary"][0]["job"] is None  # in_parallel=False: no Slurm job
    tags = dagster_instance.get_run_by_id(run_id).tags
    jobs = job_ids_in_tags(tags)
    assert len(jobs) == 3  # prep, urgent, and the one array of train
    assert tags["further/slurm_step/slurm_demo__summary"].startswith("local:")
    assert len(sbatch_calls() - before) == 3
    mats = dagster_instance.fetch_materializations(key("train"), limit=10).records
    assert len(mats) == 3

    # the same run again: every step is stored, nothing is submitted
    before = sbatch_calls()
    started_at = time.monotonic()
    ok, events, run_id = run_assets(
        dagster_instance, ["prep", "train", "summary", "urgent"], range_tags("train"), PER_STEP
    )
    assert ok and time.monotonic() - started_at < 10
    assert [e for e in events if e.event_type_value == "STEP_START"] == []
    assert job_ids_in_tags(dagster_instance.get_run_by_id(run_id).tags) == []
    assert sbatch_calls() == before
    assert len(calls()) == len(rows)


def test_a_failing_make_surfaces_the_remote_traceback(
    slurm_cluster, further_tmp_root, calls, dagster_instance
):
    # one Slurm job running the step
    ok, events, _ = run_assets(dagster_instance, ["broken"])
    assert not ok
    (message,) = failures(events)
    assert "broken cell refuses k=0" in message
    assert "slurm_project.py" in message and "in make" in message  # the remote traceback
    # a swept step: one array, one task fails, the other is stored
    ok, events, _ = run_assets(dagster_instance, ["flaky"], range_tags("flaky"))
    assert not ok
    (message,) = failures(events)
    assert "flaky cell refuses k=2" in message and "failed in Slurm job" in message
    assert "Remote traceback" in message and "slurm_project.py" in message
    assert sorted(r["cell"] for r in calls() if r["cell"] == "flaky") == ["flaky", "flaky"]
    assert len({r["array_job"] for r in calls() if r["cell"] == "flaky"}) == 1


@pytest.mark.parametrize("dagster_backend", ["sqlite"], indirect=True)  # 25 s: one backend
@pytest.mark.parametrize("steps", ["in_process", "multiprocess"])  # an array task, a step's job
def test_a_preempted_step_is_requeued_and_completes(
    slurm_cluster,
    slurm_folder,
    further_tmp_root,
    calls,
    started,
    dagster_instance,
    monkeypatch,
    steps,
):
    monkeypatch.setenv("FURTHER_TEST_SLOW_S", "4")
    monkeypatch.setenv("FURTHER_LEASE_SECS", "2")  # the killed attempt's lease expires fast
    preemptor: list[Any] = []

    def preempt() -> None:
        eventually(started.exists, 60, "slow to start")
        # all 8 CPUs on the high partition: Slurm preempts (requeues) the step's job
        preemptor.append(
            submit_with_fallbacks(
                slurm_folder,
                SlurmSpec(partition="high", cpus=8, time_min=15),
                time.sleep,
                1,
                job_name="preemptor",
            )
        )

    thread = in_background(preempt)
    ok, events, run_id = run_assets(
        dagster_instance, ["slow"], run_config=PER_STEP if steps == "multiprocess" else FAST
    )
    thread.join(timeout=5)
    assert ok, failures(events)
    rows = [r for r in calls() if r["cell"] == "slow"]
    assert [r["restarts"] for r in rows] == ["0", "1"]  # make() ran again in the requeued job
    assert len({r["job"] for r in rows}) == 1  # the same Slurm job, requeued
    assert preemptor and eventually(lambda: SLURM.result(preemptor[0]), 60, "preemptor").ok
    assert len(dagster_instance.fetch_materializations(key("slow"), limit=5).records) == 1


def test_a_step_cancelled_outside_dagster_fails_the_run_with_its_state(
    slurm_cluster, further_tmp_root, calls, started, dagster_instance, monkeypatch
):
    monkeypatch.setenv("FURTHER_TEST_SLOW_S", "120")
    cancelled: list[str] = []

    def scancel_the_step() -> None:
        eventually(started.exists, 60, "slow to start")
        (job_id,) = [r["job"] for r in calls() if r["cell"] == "slow"]
        cancel(job_id)
        cancelled.append(job_id)

    thread = in_background(scancel_the_step)
    ok, events, _ = run_assets(dagster_instance, ["slow"])
    thread.join(timeout=5)
    assert not ok
    (message,) = failures(events)
    assert f"Slurm job {cancelled[0]}" in message and "CANCELLED" in message
    assert "_log.out" in message and "_log.err" in message


def test_a_timeout_names_the_job_and_its_log_files(
    slurm_cluster, further_tmp_root, calls, dagster_instance
):
    ok, events, run_id = run_assets(dagster_instance, ["overtime"])
    assert not ok
    (message,) = failures(events)
    (job_id,) = job_ids_in_tags(dagster_instance.get_run_by_id(run_id).tags)
    assert f"Slurm job {job_id}" in message and "timed out" in message
    assert f"{job_id}_0_log.out" in message and f"{job_id}_0_log.err" in message


def test_a_request_no_partition_can_satisfy_is_refused_at_submit(
    slurm_cluster, further_tmp_root, calls, dagster_instance
):
    ok, events, _ = run_assets(dagster_instance, ["huge"])
    assert not ok
    (message,) = failures(events)
    assert "sbatch refused every attempt" in message
    assert "More processors requested than permitted" in message  # sbatch's own words
    # by name, not by count: under load accounting may still be catching up with earlier jobs
    sbatch_calls()  # settled
    assert "further-huge" not in accounting("JobName%200")  # the array's name: never queued
    ok, events, _ = run_assets(dagster_instance, ["huge_or_small"])
    assert ok, failures(events)
    assert [r["cell"] for r in calls()] == ["huge_or_small"]


# --- the run launcher ---------------------------------------------------------------------


@pytest.fixture
def launcher_home(tmp_path: Path, dagster_instance_overrides: dict[str, Any]) -> Path:
    """A DAGSTER_HOME whose dagster.yaml launches runs on Slurm (storage: SQLite or PG)."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    config: dict[str, Any] = {
        "run_launcher": {
            "module": "further_dagster.dagster.slurm_launcher",
            "class": "SlurmRunLauncher",
            "config": {"time_min": 15, "partition": "debug"},
        },
        "run_coordinator": {
            "module": "dagster._core.run_coordinator",
            "class": "DefaultRunCoordinator",
        },
        "telemetry": {"enabled": False},
        **dagster_instance_overrides,
    }
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    return home


def launch(home: Path, job: str, tags: dict[str, str] | None = None) -> str:
    run_id = str(uuid.uuid4())
    done = subprocess.run(
        [
            *(sys.executable, "-m", "dagster", "job", "launch"),
            *("-m", "tests.slurm.slurm_project", "-a", "defs", "-j", job),
            *("--run-id", run_id, "--tags", json.dumps(tags or {})),
        ],
        env={**os.environ, "DAGSTER_HOME": str(home)},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return run_id


def wait_finished(instance: dg.DagsterInstance, run_id: str, timeout: float = 90) -> Any:
    return eventually(
        lambda: (run := instance.get_run_by_id(run_id)) is not None and run.is_finished and run,
        timeout,
        f"run {run_id} to finish",
    )


def test_a_run_launched_through_the_launcher_completes(
    slurm_cluster, further_tmp_root, calls, launcher_home
):
    run_id = launch(launcher_home, "quick", {"further/mode": "INLINE"})
    with dg.DagsterInstance.from_config(str(launcher_home)) as instance:
        run = wait_finished(instance, run_id)
        assert run.status == dg.DagsterRunStatus.SUCCESS
        for name in ("prep", "urgent"):
            assert instance.get_latest_materialization_event(key(name)) is not None
        job_id = run.tags[JOB_ID_TAG]
        assert Path(run.tags[STDOUT_TAG]).exists() and Path(run.tags[STDERR_TAG]).exists()
        assert f"{job_id}_0_log" in run.tags[STDOUT_TAG]
        # both cells ran inside the run worker's job (mode INLINE)
        assert {r["job"] for r in calls()} == {job_id}
        health = eventually(  # the job ends a moment after the run
            lambda: (
                (h := instance.run_launcher.check_run_worker_health(run)).status.value == "SUCCESS"
                and h
            ),
            30,
            "the run worker's job to complete",
        )
        assert health.run_worker_id == job_id


def test_a_cancelled_run_leaves_no_job_in_squeue(
    slurm_cluster, further_tmp_root, calls, started, launcher_home, monkeypatch
):
    monkeypatch.setenv("FURTHER_TEST_SLOW_S", "120")
    run_id = launch(launcher_home, "slow_job")  # SLURM mode: the step is a second, nested job
    with dg.DagsterInstance.from_config(str(launcher_home)) as instance:
        eventually(started.exists, 60, "slow to start")
        run = instance.get_run_by_id(run_id)
        jobs = job_ids_in_tags(run.tags)
        assert len(jobs) == 2  # the run worker and the step
        assert instance.run_launcher.terminate(run_id)  # what the UI's Terminate calls
        run = wait_finished(instance, run_id, timeout=30)
        assert run.status == dg.DagsterRunStatus.CANCELED
        assert in_queue(jobs) == []
        assert {slurm_state(j) for j in jobs} == {"CANCELLED"}


@pytest.mark.parametrize("dagster_backend", ["sqlite"], indirect=True)
def test_a_cancelled_sweep_leaves_no_array_task_in_squeue(
    slurm_cluster, further_tmp_root, calls, started, launcher_home, monkeypatch
):
    monkeypatch.setenv("FURTHER_TEST_SLOW_S", "120")
    run_id = launch(launcher_home, "nap_job", range_tags("nap"))  # the sweep as one array
    with dg.DagsterInstance.from_config(str(launcher_home)) as instance:
        eventually(started.exists, 60, "nap to start")
        tags = instance.get_run_by_id(run_id).tags
        assert "further/slurm_step/slurm_demo__nap" not in tags  # submitted by the run worker
        jobs = job_ids_in_tags(tags)
        assert len(jobs) == 2 and "further/slurm_array/slurm_demo__nap" in tags
        assert instance.run_launcher.terminate(run_id)
        assert wait_finished(instance, run_id, timeout=30).status == dg.DagsterRunStatus.CANCELED
        assert in_queue(jobs) == []
        assert [r for r in calls() if r["cell"] == "nap"]  # the array was running


@pytest.mark.parametrize(
    "dagster_backend", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
def test_a_run_worker_cancelled_outside_dagster_fails_the_run_through_monitoring(
    slurm_cluster, further_tmp_root, calls, started, launcher_home, monkeypatch
):
    from dagster._daemon.monitoring.run_monitoring import monitor_started_run

    monkeypatch.setenv("FURTHER_TEST_SLOW_S", "120")
    run_id = launch(launcher_home, "slow_job", {"further/mode": "INLINE"})
    with dg.DagsterInstance.from_config(str(launcher_home)) as instance:
        eventually(started.exists, 60, "slow to start")
        job_id = instance.get_run_by_id(run_id).tags[JOB_ID_TAG]
        cancel(job_id)  # scancel from outside Dagster
        health = eventually(
            lambda: (
                (
                    h := instance.run_launcher.check_run_worker_health(
                        instance.get_run_by_id(run_id)
                    )
                ).status.value
                == "FAILED"
                and h
            ),
            30,
            "the launcher to report the worker failed",
        )
        assert "CANCELLED" in health.msg and job_id in health.msg and "_log.err" in health.msg
        record = instance.get_run_record_by_id(run_id)
        assert record.dagster_run.status == dg.DagsterRunStatus.STARTED
        monitor_started_run(instance, None, record, logging.getLogger("test"))  # the daemon's
        run = instance.get_run_by_id(run_id)
        assert run.status == dg.DagsterRunStatus.FAILURE
        failure = instance.all_logs(run_id, of_type=dg.DagsterEventType.RUN_FAILURE)[-1]
        assert "CANCELLED" in failure.message and job_id in failure.message


@pytest.mark.parametrize(
    "dagster_backend", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
def test_example_project_runs_on_slurm_from_the_run_tag(
    slurm_cluster, further_tmp_root, dagster_instance
):
    """example_project as shipped (default mode LOCAL), run once with `further/mode=SLURM`:
    raw_data on debug, the alpha sweep as one array on gpu, report on high, baseline inline."""
    from dagster._core.definitions.reconstruct import ReconstructableRepository

    import example_project

    compiled = location_of(example_project.defs)
    names = ["raw_data", "features", "split", "fit", "baseline", "calibration", "report"]
    keys = [dg.AssetKey(["example", n]) for n in names]
    fit_keys = compiled.asset_by_key[dg.AssetKey(["example", "fit"])].partitions.keys
    tags = {
        "further/mode": "SLURM",
        "dagster/asset_partition_range_start": fit_keys[0],
        "dagster/asset_partition_range_end": fit_keys[-1],
    }
    repo = ReconstructableRepository.for_module(
        "example_project", "defs", working_directory=str(REPO)
    )
    with dg.execute_job(
        repo.get_reconstructable_job("__ASSET_JOB"),
        instance=dagster_instance,
        asset_selection=keys,
        tags=tags,
        run_config=FAST,
        raise_on_error=False,
    ) as result:
        assert result.success, failures(list(result.all_events))
        run_tags = dagster_instance.get_run_by_id(result.run_id).tags
    partitions = {}
    for tag, value in run_tags.items():
        if tag.startswith(("further/slurm_step/", "further/slurm_array/")):
            for job in value.split(","):
                if not job.startswith("local:"):
                    partitions[tag.rsplit("/", 1)[1]] = slurm_state_partition(job)
    assert partitions["example__raw_data"] == "debug"
    assert partitions["example__fit"] == "gpu"  # the array of the alpha sweep
    assert partitions["example__report"] == "high"
    # baseline runs inline in the run's process: no Slurm job
    assert not any(t.endswith("/example__baseline") for t in run_tags)
    report = dagster_instance.get_latest_materialization_event(dg.AssetKey(["example", "report"]))
    assert report is not None


def slurm_state_partition(job_id: str) -> str:
    """The partition a job ran on (slurmctld first; accounting lags a little)."""

    def ask() -> str:
        for command in (
            ["squeue", "-h", "-t", "all", "-j", job_id, "-o", "%P"],
            ["sacct", "-X", "-n", "-P", "-j", job_id, "-o", "Partition"],
        ):
            out = subprocess.run(command, capture_output=True, text=True).stdout.split()
            if out:
                return out[0]
        return ""

    return eventually(ask, 15, f"the partition of job {job_id}")
