"""`further-dagster materialize`: Dagster's selection syntax, partitions filled in."""

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

pytestmark = pytest.mark.cli

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@pytest.fixture
def env(tmp_path, further_tmp_root):
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    return {**os.environ, "DAGSTER_HOME": str(home), "FURTHER_ROOT": str(further_tmp_root)}


def materialize(env, *args):
    proc = subprocess.run(
        [str(BIN / "further-dagster"), "materialize", "-m", "example_project", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    return proc.returncode, proc.stdout + proc.stderr


def test_the_natural_selections_just_work(env, further_tmp_root):
    # one point of the sweep, by its readable partition key
    code, out = materialize(env, "--select", "example/fit", "--partition", "alpha=0.1")
    assert code == 0, out[-3000:]
    assert "[partition alpha=0.1]" in out
    assert len(list(further_tmp_root.glob("example/fit/*/result"))) == 1

    # everything: every partition filled in, in one run
    code, out = materialize(env)
    assert code == 0, out[-3000:]
    assert "run 1/1" in out and "[partitions alpha=0.01...alpha=10.0]" in out
    assert len(list(further_tmp_root.glob("example/fit/*/result"))) == 4

    # an upstream selection, all stored: the run starts no step and says so
    code, out = materialize(env, "--select", "+example/report")
    assert code == 0, out[-3000:]
    assert "4 step(s) already stored" in out
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        (run,) = instance.get_runs(limit=1)
        assert run.tags["further/cached_steps"] == "4"


def test_a_selection_that_matches_nothing_is_a_clear_error(env):
    code, out = materialize(env, "--select", "example/nothing")
    assert code != 0
    assert "example/nothing" in out and "Traceback" not in out
