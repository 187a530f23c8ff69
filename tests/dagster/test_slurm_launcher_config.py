"""The Slurm run launcher from dagster.yaml, and its health mapping for Slurm states the test
cluster cannot produce (node failure, out of memory): a fake `squeue` on PATH stands in."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import dagster as dg
import pytest

from further_dagster.dagster.slurm_launcher import SlurmRunLauncher
from further_dagster.slurm import SlurmSpec

pytestmark = pytest.mark.dagster

LAUNCHER = {
    "module": "further_dagster.dagster.slurm_launcher",
    "class": "SlurmRunLauncher",
    "config": {"partition": "debug", "time_min": 30, "extra": {"qos": "low"}},
}


def test_dagster_yaml_config_becomes_the_lowest_spec_layer() -> None:
    with dg.instance_for_test(overrides={"run_launcher": LAUNCHER}) as instance:
        launcher = instance.run_launcher
        assert isinstance(launcher, SlurmRunLauncher)
        assert launcher.defaults == SlurmSpec(partition="debug", time_min=30, extra={"qos": "low"})
        assert launcher.defaults.model_fields_set == {"partition", "time_min", "extra"}
        run = dg.DagsterRun(job_name="j", run_id="r1", tags={"further/slurm": '{"cpus": 4}'})
        assert launcher.spec_for(run) == SlurmSpec(
            partition="debug", time_min=30, cpus=4, extra={"qos": "low"}
        )


def test_an_unknown_launcher_field_is_refused() -> None:
    bad = {**LAUNCHER, "config": {"partiton": "debug"}}
    with pytest.raises(Exception, match="partiton"):
        with dg.instance_for_test(overrides={"run_launcher": bad}) as instance:
            _ = instance.run_launcher


@pytest.fixture
def fake_squeue(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """`squeue` prints `<job>|<state>` from $FAKE_STATE; `sacct` knows nothing."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in {
        "squeue": 'echo "${FAKE_JOB}|${FAKE_STATE}"',
        "sacct": "exit 0",
    }.items():
        path = bin_dir / name
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_JOB", "4242")

    def set_state(state: str) -> None:
        monkeypatch.setenv("FAKE_STATE", state)

    return set_state


@pytest.mark.parametrize(
    ("state", "status"),
    [
        ("PENDING", "RUNNING"),
        ("REQUEUED", "RUNNING"),
        ("COMPLETED", "SUCCESS"),
        ("NODE_FAIL", "FAILED"),
        ("OUT_OF_MEMORY", "FAILED"),
        ("TIMEOUT", "FAILED"),
        ("PREEMPTED", "FAILED"),
    ],
)
def test_health_maps_slurm_states(fake_squeue, state: str, status: str) -> None:
    fake_squeue(state)
    with dg.instance_for_test(overrides={"run_launcher": LAUNCHER}) as instance:
        run = dg.DagsterRun(job_name="j", run_id="r1", tags={"further/slurm_job_id": "4242"})
        health = instance.run_launcher.check_run_worker_health(run)
        assert health.status.value == status
        assert health.run_worker_id == "4242"
        if status == "FAILED":
            assert "Slurm job 4242" in health.msg and "4242_0_log.err" in health.msg
            assert state in health.msg or (state == "TIMEOUT" and "timed out" in health.msg)


@pytest.mark.postgres
def test_the_shipped_slurm_postgres_dagster_yaml_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, postgres_db: dict
) -> None:
    """deploy/dagster.slurm-postgres.yaml, with the test server's coordinates in its env vars."""
    import shutil

    home = tmp_path / "home"
    home.mkdir()
    shipped = Path(__file__).resolve().parents[2] / "deploy" / "dagster.slurm-postgres.yaml"
    shutil.copy(shipped, home / "dagster.yaml")
    for name, value in {
        "HOST": postgres_db["hostname"],
        "PORT": str(postgres_db["port"]),
        "DB": postgres_db["db_name"],
        "USERNAME": postgres_db["username"],
        "PASSWORD": "unused-with-trust-auth",
    }.items():
        monkeypatch.setenv(f"DAGSTER_PG_{name}", value)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert isinstance(instance.run_launcher, SlurmRunLauncher)
        assert instance.run_launcher.defaults == SlurmSpec(
            partition="debug", cpus=1, mem_gb=2, time_min=240
        )
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert instance.run_monitoring_enabled
        assert list(instance.get_runs()) == []
