"""`further-dagster materialize`: Dagster's selection syntax, partitions filled in."""

import os
import shutil
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


def _chain(env, *args, importtime=False):
    cmd = [sys.executable, *(["-X", "importtime"] if importtime else []), "-m"]
    proc = subprocess.run(
        [*cmd, "further_dagster.cli", "materialize", "-m", "bench.chain_project", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    return proc.returncode, proc.stdout, proc.stderr


def test_stored_assets_stay_out_of_the_run_and_a_stored_selection_makes_none(env, further_tmp_root):
    env = {**env, "FURTHER_BENCH_CHAIN": "4"}
    # a notebook stored the whole chain: Dagster has never seen it
    code = "from further_dagster import Session; Session(progress=False).call('chain_4.c0003')"
    subprocess.run(
        [sys.executable, "-c", "import bench.chain_project; " + code],
        cwd=ROOT,
        env=env,
        check=True,
        timeout=600,
    )
    shutil.rmtree(further_tmp_root / "chain_4" / "c0003")

    # one result gone: only its asset is in the run; the stored ones are recorded as cache hits
    code, out, err = _chain(env)
    assert code == 0, (out + err)[-3000:]
    assert "3 asset(s) already stored, left out of the run (3 newly recorded as cache hits)" in out
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        (run,) = instance.get_runs()
        assert run.asset_selection == {dg.AssetKey(["chain_4", "c0003"])}
        for i in range(4):
            event = instance.get_latest_materialization_event(dg.AssetKey(["chain_4", f"c{i:04d}"]))
            mat = event.asset_materialization
            assert mat.tags["dagster/data_version"] == mat.metadata["further/logic_key"].value
            assert mat.metadata["further/cache"].value == ("miss" if i == 3 else "hit")

    # all stored: the engine decides, without importing Dagster, and no run is created
    code, out, err = _chain(env, importtime=True)
    assert code == 0, (out + err)[-3000:]
    assert "all 4 selected asset(s) (4 instance(s)) are stored: no run created" in out
    imported = {line.rsplit("|", 1)[-1].strip() for line in err.splitlines() if "|" in line}
    assert "further_dagster.engine.plan" in imported and "dagster" not in imported
    code, out, err = _chain(env, "--select", "+chain_4/c0001")
    assert "all 2 selected asset(s)" in out
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        assert len(instance.get_runs()) == 1
