"""A static chapter on the real Slurm: every array submitted at once, chained by Slurm's own
dependencies; and a task imports the cells' module, never the code location (nor Dagster)."""

from __future__ import annotations

from pathlib import Path

import pytest

from further_dagster import VAR, Session
from further_dagster.engine import Mode, run_missing
from further_dagster.engine.backends.slurm import SlurmSettings, Submission

pytestmark = pytest.mark.slurm

SWEEP = {"i": VAR([0, 1]), "j": VAR([0, 1])}


def test_a_three_level_sweep_goes_to_slurm_in_one_pass(
    slurm_cluster, slurm_folder: Path, further_tmp_root: Path
) -> None:
    from tests.slurm.defs_project.cells import Score

    session = Session(progress=False)
    missing = session.plan(Score, params=SWEEP).missing
    seen: list[Submission] = []
    report = run_missing(
        session.store,
        missing,
        mode=Mode.SLURM,
        slurm=SlurmSettings(folder=slurm_folder, on_submit=seen.append, poll_s=0.1),
    )
    assert len(report.computed) == 12
    assert [(s.cell, len(s.job_ids)) for s in seen] == [
        ("slurm_chain.load", 4),
        ("slurm_chain.fit", 4),
        ("slurm_chain.score", 4),
    ]
    # every array was submitted before the first task ended, each level waiting for the one
    # below task by task in the sbatch script submitit wrote
    loads, fits, scores = (s.job_ids[0].split("_")[0] for s in seen)
    scripts = "\n".join(p.read_text() for p in slurm_folder.rglob("*.sh"))
    assert f"#SBATCH --dependency=aftercorr:{loads}\n" in scripts
    assert f"#SBATCH --dependency=aftercorr:{fits}\n" in scripts
    assert [s.v for s in session.call(Score, params=SWEEP)] == [
        (i * 10 + j + 1) * 2 for i in (0, 1) for j in (0, 1)
    ]
    again: list[Submission] = []
    run_missing(
        session.store,
        session.plan(Score, params=SWEEP).missing,
        mode=Mode.SLURM,
        slurm=SlurmSettings(folder=slurm_folder, on_submit=again.append),
    )
    assert again == []  # stored: nothing submitted


def test_a_task_imports_the_cells_module_not_the_code_location(
    slurm_cluster, slurm_folder: Path, further_tmp_root: Path
) -> None:
    """tests/slurm/defs_project/__init__.py calls build_definitions (imported here, so
    Dagster is too); the task that computes `imports` never imports it."""
    import sys

    import tests.slurm.defs_project  # noqa: F401  (the code location, as dagster dev loads it)
    from tests.slurm.defs_project.cells import Imports

    assert "dagster" in sys.modules
    session = Session(
        mode="SLURM", progress=False, slurm=SlurmSettings(folder=slurm_folder, poll_s=0.1)
    )
    found = session.call(Imports)
    assert found.definitions is False
    assert found.dagster is False


def test_a_failed_task_cancels_what_waits_on_it_and_keeps_the_rest(
    slurm_cluster, slurm_folder: Path, further_tmp_root: Path
) -> None:
    """The load at (1, 1) fails: Slurm would keep its fit and score PENDING for good
    (DependencyNeverSatisfied); the pool cancels them, the run ends, everything else is
    stored."""
    from further_dagster.errors import CellComputeError
    from further_dagster.slurm import SubmititClient
    from tests.slurm.defs_project.cells import FlakyScore

    session = Session(progress=False)
    missing = session.plan(FlakyScore, params=SWEEP).missing
    seen: list[Submission] = []
    with pytest.raises(CellComputeError, match="1 instance\\(s\\) failed, 2 blocked") as failed:
        run_missing(
            session.store,
            missing,
            mode=Mode.SLURM,
            slurm=SlurmSettings(folder=slurm_folder, on_submit=seen.append, poll_s=0.1),
        )
    assert "flaky_load refuses (1, 1)" in failed.value.remote_traceback
    assert len(seen) == 3
    left = session.plan(FlakyScore, params=SWEEP).missing
    assert sorted(i.cell.name for i in left) == ["flaky_fit", "flaky_load", "flaky_score"]
    client = SubmititClient()
    found = client.states(s.job_ids[0].split("_")[0] for s in seen[1:])
    assert "CANCELLED" in set(found.values())
