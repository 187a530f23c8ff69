"""Several processes racing on the same keys, and a process killed in the middle of make()."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from further_dagster import Session

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]

CALL = """
import sys
from further_dagster import Session
import tests.engine.cells
result = Session(progress=False).call(sys.argv[1])
print(result.key)
"""


def _spawn(cell, env):
    return subprocess.Popen(
        [sys.executable, "-c", CALL, cell],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_racing_processes_compute_each_key_once(further_tmp_root, calls):
    env = {**os.environ, "FURTHER_TEST_DELAY": "0.5"}
    procs = [_spawn("engine_demo.sweep", env) for _ in range(4)]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], [o[1][-2000:] for o in outputs]
    assert len({o[0].strip() for o in outputs}) == 1  # everyone got the same instance
    made = calls.read()
    keys = [(cell, key) for cell, key, _, _ in made]
    assert len(keys) == len(set(keys)) == 4  # 3 bases + 1 sweep, each made exactly once
    assert not any("Traceback" in o[1] for o in outputs)


def test_killed_in_make_is_recomputed_and_never_loaded_partially(
    further_tmp_root, calls, monkeypatch
):
    monkeypatch.setenv("FURTHER_LEASE_SECS", "1.5")
    env = dict(os.environ)
    proc = _spawn("engine_demo.hang", env)
    deadline = time.monotonic() + 60
    while calls.count("hang") == 0:  # wait until make() is running
        assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read()
        time.sleep(0.05)
    session = Session(progress=False)
    inst = session.plan("engine_demo.hang").roots[0]
    inst_dir = session.store.instance_dir("engine_demo", "hang", inst.key)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (inst_dir / "result").exists()
    assert not session.store.is_stored("engine_demo", "hang", inst.key)
    state = session.store.read_state("engine_demo", "hang", inst.key)
    assert state is not None and state.status == "running"  # what the dead process left

    monkeypatch.setenv("FURTHER_TEST_NO_HANG", "1")
    started = time.monotonic()
    result = Session(progress=False).call("engine_demo.hang")
    assert result.value == "done"
    assert calls.count("hang") == 2
    assert time.monotonic() - started < 30  # took over the expired lease, did not wait forever
    committed = sorted(p.name for p in (inst_dir / "result").iterdir())
    assert "partial.txt" in committed and "manifest.json" in committed
    assert not [p for p in inst_dir.iterdir() if p.name.startswith("result.tmp")]
    assert session.store.read_state("engine_demo", "hang", inst.key).status == "success"
