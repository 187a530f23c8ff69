"""`dagster asset materialize` in a subprocess against real code locations."""

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
    return {**os.environ, "DAGSTER_HOME": str(home), "FURTHER_ROOT": str(further_tmp_root)}


def run(args, env, timeout=600):
    proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def started_steps(output):
    return [line.split(" - ")[6] for line in output.splitlines() if " - STEP_START - " in line]


def test_example_project_end_to_end_then_fully_cached(env, further_tmp_root):
    span = run([BIN / "further-dagster", "partition-range", "-m", "example_project"], env).strip()
    assert "..." in span
    cmd = [
        BIN / "dagster",
        "asset",
        "materialize",
        "-m",
        "example_project",
        "--select",
        "*",
        "--partition-range",
        span,
    ]
    first = run(cmd, env)
    cells = (
        "raw_data",
        "features",
        "split",
        "fit",
        "baseline",
        "bootstrap",
        "calibration",
        "report",
    )
    # the resource cell `measurements` is an observable source: no step of its own, its data is
    # read by the step of `calibration`, which needs it
    assert sorted(started_steps(first)) == sorted(f"example__{c}" for c in cells)
    # the `stored_result_intact` checks (dagster/checks.py) are evaluated by the executor once
    # their asset's step succeeded: no step of their own
    assert first.count("Asset check 'stored_result_intact'") == 8
    stored = sorted(p.parent.parent.name for p in further_tmp_root.glob("example/*/*/result"))
    assert stored.count("fit") == 4 and "measurements" in stored
    assert stored.count("bootstrap") == 5  # the incrementing cell's own instruction: 5 increments
    assert len(stored) == 16

    second = run(cmd, env)
    assert started_steps(second) == []
    assert "further: 8 step(s) already stored, not started" in second
    # the checks of cached steps are evaluated by the executor, not started, and pass
    assert second.count("Asset check 'stored_result_intact'") == 8
    assert "did not pass" not in second
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        meta = instance.get_latest_materialization_event(
            dg.AssetKey(["example", "report"])
        ).asset_materialization.metadata
        assert meta["further/cache"].value == "hit"
        records = instance.fetch_materializations(dg.AssetKey(["example", "fit"]), limit=20)
        assert len(records.records) == 8  # 4 partitions x 2 runs
    # nothing was computed again: every instance still has exactly one attempt
    from further_dagster import ArtifactStore

    store = ArtifactStore(further_tmp_root)
    for result in further_tmp_root.glob("example/*/*/result"):
        inst = result.parent
        state = store.read_state("example", inst.parent.name, inst.name)
        assert state.attempts == 1


def test_select_star_on_an_unswept_project(env):
    env = {**env, "FURTHER_BENCH_CHAIN": "4"}
    cmd = [BIN / "dagster", "asset", "materialize", "-m", "bench.chain_project", "--select", "*"]
    first = run(cmd, env)
    assert len(started_steps(first)) == 4
    second = run(cmd, env)
    assert started_steps(second) == []
    assert "4 step(s) already stored" in second
