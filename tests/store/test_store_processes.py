"""Several processes, one key: computed exactly once; a killed computer is redone, never loaded."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import further_dagster
from further_dagster.store import ArtifactStore

from .conftest import KEY

pytestmark = pytest.mark.unit

WORKER = Path(__file__).with_name("_store_worker.py")
REPO = Path(further_dagster.__file__).resolve().parents[1]


def spawn(
    root: Path, mode: str, counter: Path, lease_s: float, go: Path | None = None
) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    args = [sys.executable, str(WORKER), str(root), KEY, mode, str(counter), str(lease_s)]
    if go is not None:
        args.append(str(go))
    return subprocess.Popen(
        args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def wait_for(predicate: object, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_processes_racing_for_one_key_compute_it_once(tmp_path: Path) -> None:
    root, counter, go = tmp_path / "root", tmp_path / "counter", tmp_path / "go"
    procs = [spawn(root, "ok", counter, 0.6, go) for _ in range(4)]
    wait_for(lambda: len(list(tmp_path.glob("go.ready-*"))) == 4)
    go.touch()  # release all four at once
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))

    lines = counter.read_text().splitlines()
    assert len(lines) == 1  # computed exactly once, although compute outlived the lease
    assert sorted(r["hit"] for r in results) == [False, True, True, True]
    assert all(r["waited"] for r in results if r["hit"])
    expected = {"value": {"computed_by": int(lines[0])}, "n": 7}
    assert all(r["loaded"] == expected for r in results)
    state = ArtifactStore(root).read_state("proj", "cell", KEY)
    assert state is not None and state.status == "success" and state.attempts == 1


def test_killed_computation_leaves_no_result_and_is_redone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root, counter = tmp_path / "root", tmp_path / "counter"
    proc = spawn(root, "crash", counter, 0.5)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL

    store = ArtifactStore(root, lease_s=0.5, poll_s=0.02)
    inst = store.instance_dir("proj", "cell", KEY)
    assert not store.is_stored("proj", "cell", KEY)
    assert (inst / "lock").exists()  # the dead holder's lease is still on disk
    assert len(list(inst.glob("result.tmp-*"))) == 1  # with its partial output
    state = store.read_state("proj", "cell", KEY)
    assert state is not None and state.status == "running" and state.pid == proc.pid

    with caplog.at_level(logging.WARNING, logger="further.store"):
        outcome = store.ensure("proj", "cell", KEY, lambda d, lg: {"value": "redone"}, {})
    assert outcome.hit is False and outcome.attempts == 2
    assert store.load("proj", "cell", KEY) == {"value": "redone"}
    assert not list(inst.glob("result.tmp-*"))
    assert not (inst / "lock").exists()
    assert f"pid {proc.pid}" in caplog.text  # takeover / unfinished attempt named the dead pid


def test_waiter_takes_over_when_the_holder_is_killed(tmp_path: Path) -> None:
    root, counter = tmp_path / "root", tmp_path / "counter"
    proc = spawn(root, "hang", counter, 0.5)
    try:
        wait_for(lambda: counter.exists() and counter.read_text().strip() != "")
        store = ArtifactStore(root, lease_s=0.5, poll_s=0.02, wait_timeout_s=20)
        killer = threading.Timer(0.4, proc.kill)
        killer.start()
        t0 = time.monotonic()
        outcome = store.ensure("proj", "cell", KEY, lambda d, lg: {"value": "mine"}, {})
        elapsed = time.monotonic() - t0
    finally:
        proc.kill()
        proc.communicate(timeout=60)
    assert outcome.hit is False and outcome.waited is True
    assert store.load("proj", "cell", KEY) == {"value": "mine"}
    assert 0.4 <= elapsed < 5  # waited for the live lease, then only about one lease length
