"""What a Slurm task imports: the cells' modules, never the package above them that calls
build_definitions (so not Dagster), unless a cell module needs that package itself. Each task
runs `run_task` in a fresh interpreter, as in a Slurm job; no cluster is needed."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from further_dagster import Session
from further_dagster.engine.backends.slurm_task import definitions_packages, payload_for

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
TASK = """
import pickle, sys
from further_dagster.engine.backends.slurm_task import run_task
outcome = run_task(pickle.load(open(sys.argv[1], "rb")))
print(outcome.hit, "dagster" in sys.modules)
"""


def run_in_fresh_interpreter(tmp_path: Path, payload: object) -> tuple[str, str]:
    path = tmp_path / "payload.pkl"
    path.write_bytes(pickle.dumps(payload))
    done = subprocess.run(
        [sys.executable, "-c", TASK, str(path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=True,
    )
    return done.stdout.strip(), done.stderr


def test_a_task_for_a_cell_of_a_code_location_does_not_import_dagster(
    further_tmp_root: Path, tmp_path: Path
) -> None:
    import tests.slurm.defs_project  # noqa: F401  (loaded here as `dagster dev -m` would)
    from tests.slurm.defs_project.cells import Imports

    session = Session(progress=False)
    (inst,) = session.plan(Imports).missing
    payload = payload_for(session.store, inst, {Imports.__module__})
    assert payload.bare == ("tests.slurm.defs_project",)
    out, _ = run_in_fresh_interpreter(tmp_path, payload)
    assert out == "False False"  # computed, and the task never imported Dagster
    found = session.call(Imports)
    assert found.dagster is False and found.definitions is False


def test_a_cell_module_that_needs_its_package_still_runs(
    further_tmp_root: Path, tmp_path: Path
) -> None:
    from tests.slurm.defs_project.needs_package import NeedsPackage

    session = Session(progress=False)
    (inst,) = session.plan(NeedsPackage).missing
    payload = payload_for(session.store, inst, {NeedsPackage.__module__})
    out, err = run_in_fresh_interpreter(tmp_path, payload)
    assert out == "False True"
    assert "need their package tests.slurm.defs_project itself" in err
    assert session.call(NeedsPackage).dagster is True


def test_packages_without_definitions_are_imported_as_usual() -> None:
    import bench.slurm_sweep  # noqa: F401  (its definitions live beside the cells, not above)

    assert definitions_packages({"bench.slurm_sweep_cells"}) == ()
    assert definitions_packages({"tests.engine.cells"}) == ()
