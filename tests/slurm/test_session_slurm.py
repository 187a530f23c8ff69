"""Engine mode SLURM without Dagster: a Session sends the instances that are ready together to
Slurm as one job array per wave, and a cached call submits nothing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from further_dagster import Session
from further_dagster.engine import Mode, run_missing
from further_dagster.engine.backends.slurm import SlurmSettings, Submission
from further_dagster.errors import CellComputeError
from tests.engine import cells  # noqa: F401  (registers engine_demo)

pytestmark = pytest.mark.slurm


def test_a_session_in_slurm_mode_submits_one_array_per_wave(
    slurm_cluster, further_tmp_root: Path, calls
) -> None:
    session = Session(progress=False)
    plan = session.plan("engine_demo.sweep")
    submissions: list[Submission] = []
    report = run_missing(
        session.store,
        plan.missing,
        mode=Mode.SLURM,
        slurm=SlurmSettings(on_submit=submissions.append),
    )
    assert len(report.computed) == 4
    # wave 1: the three bases, one array; wave 2: the sweep that needs them, one job
    assert [(s.cell, len(s.job_ids), s.array) for s in submissions] == [
        ("engine_demo.base", 3, True),
        ("engine_demo.sweep", 1, True),
    ]
    assert len({j.split("_")[0] for j in submissions[0].job_ids}) == 1
    assert {int(c[2]) for c in calls.read()} - {os.getpid()}  # not computed here
    # a Session in SLURM mode finds everything stored: no job
    assert Session(mode="SLURM", progress=False).call("engine_demo.sweep").sizes == [1, 2, 3]
    assert calls.count() == 4


def test_a_failing_task_keeps_the_others_and_carries_the_remote_traceback(
    slurm_cluster, further_tmp_root: Path, calls
) -> None:
    from tests.slurm.slurm_project import FlakySweep

    session = Session(progress=False)
    plan = session.plan(FlakySweep)
    flakies = [i for i in plan.missing if i.cell.name == "flaky"]
    with pytest.raises(CellComputeError) as failed:
        run_missing(session.store, flakies, mode=Mode.SLURM)
    assert "flaky cell refuses k=2" in failed.value.remote_traceback
    assert "failed in Slurm job" in str(failed.value)
    stored = [i for i in flakies if session.store.is_stored("slurm_demo", "flaky", i.key)]
    assert [i.specs.k for i in stored] == [1]
