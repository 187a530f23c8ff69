"""Processes for the fault suite (test_faults.py): real processes on real files.

python _fault_worker.py hold ROOT KEY LEASE_S READY SECONDS [TAG]
    ensure one key whose compute touches READY, sleeps SECONDS and returns {"by": TAG};
    prints the outcome and what it loaded as one JSON line.
python _fault_worker.py killloop ROOT SEED TRIALS OUT
    the kill -9 loop: forked children ensure keys and SIGKILL themselves at the K-th
    filesystem operation (an audit hook counts every open, rename, remove, mkdir, utime,
    scandir and rmtree), K drawn at random (seeded) over the whole attempt: lease,
    state writes, make(), encoding, manifest, commit rename, release. After every trial
    the parent checks the store; OUT gets a JSON summary.
"""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

import further_dagster.store.index.writer  # noqa: F401  (before the forks: see _child)
from further_dagster.errors import CorruptArtifactError
from further_dagster.store import ArtifactStore, provenance

PROJECT, CELL = "faults", "cell"
EVENTS = frozenset(
    {"open", "os.rename", "os.remove", "os.mkdir", "os.utime", "os.scandir", "shutil.rmtree"}
)
_kill: dict[str, Any] = {"armed": False, "left": 0, "count": 0, "log": None}


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if _kill["armed"] and event in EVENTS:
        _kill["count"] += 1
        _kill["left"] -= 1
        if _kill["left"] <= 0:
            _kill["armed"] = False
            if _kill["log"] is not None:  # where it died, for the summary
                fd = os.open(_kill["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
                os.write(fd, f"{event} {args[0] if args else ''}\n".encode())
                os.close(fd)
            os.kill(os.getpid(), signal.SIGKILL)


def hold(root: str, key: str, lease_s: str, ready: str, seconds: str, tag: str = "") -> None:
    store = ArtifactStore(root, lease_s=float(lease_s), poll_s=0.02, wait_timeout_s=120)

    def compute(tmp_dir: Path, logger: logging.Logger) -> dict[str, Any]:
        Path(ready).touch()
        time.sleep(float(seconds))
        return {"by": tag or str(os.getpid())}

    outcome = store.ensure(PROJECT, CELL, key, compute, {})
    loaded = store.load(PROJECT, CELL, key)
    print(json.dumps({"hit": outcome.hit, "waited": outcome.waited, "loaded": loaded}))


# --- the kill -9 loop ----------------------------------------------------------------------


def expected(key: str) -> dict[str, Any]:
    scale = int(key[:4], 16)
    return {
        "arr": np.arange(2000, dtype=np.int64) * scale,
        "meta": {"key": key, "n": 2000, "half": 0.5, "flag": True},
        "text": key * 100,
    }


def _child(root: str, key: str, left: int, makes: str, count_file: str | None) -> None:
    """Runs in a forked child; never returns."""
    code = 1
    try:
        provenance.clear_cache()  # this is another process: its own pid in the records
        provenance.process_facts()  # gathered before arming: kills land in the store's work
        import sqlite3  # noqa: F401  (the SQL index's modules are imported before arming too)

        store = ArtifactStore(root, lease_s=15, poll_s=0.01, wait_timeout_s=60)

        def compute(tmp_dir: Path, logger: logging.Logger) -> dict[str, Any]:
            with open(makes, "a") as fh:
                fh.write(f"start {os.getpid()} {key}\n")
            for n in range(4):  # side files: make() writes into the artifact dir too
                (tmp_dir / f"extra{n}.txt").write_text("side file\n" * 50)
            values = expected(key)
            with open(makes, "a") as fh:
                fh.write(f"made {os.getpid()} {key}\n")
            return values

        _kill.update(armed=True, left=left, count=0, log=os.path.join(root, "..", "kills.log"))
        outcome = store.ensure(PROJECT, CELL, key, compute, {"specs": {"key": key}})
        _kill["armed"] = False
        if count_file is not None:
            Path(count_file).write_text(str(_kill["count"]))
        code = 3 if outcome.hit else 0
    except BaseException:  # noqa: BLE001 - reported through the exit code and stderr
        _kill["armed"] = False
        traceback.print_exc()
    finally:
        os._exit(code)


def _fork(root: str, key: str, left: int, makes: str, count_file: str | None = None) -> int:
    pid = os.fork()
    if pid == 0:
        _child(root, key, left, makes, count_file)
    return pid


def _wait(pids: list[int]) -> list[str]:
    out = []
    for pid in pids:
        _, status = os.waitpid(pid, 0)
        if os.WIFSIGNALED(status):
            out.append(f"signal {os.WTERMSIG(status)}")
        else:
            out.append({0: "computed", 3: "hit"}.get(os.WEXITSTATUS(status), "error"))
    return out


def _check(store: ArtifactStore, key: str) -> str:
    """'stored', 'missing', or what is wrong."""
    try:
        store.read_state(PROJECT, CELL, key)
    except CorruptArtifactError as exc:
        return f"torn state: {exc}"
    if not store.is_stored(PROJECT, CELL, key):
        return "missing"
    loaded = store.load(PROJECT, CELL, key)
    want = expected(key)
    if set(loaded) != set(want) or loaded["meta"] != want["meta"] or loaded["text"] != want["text"]:
        return f"wrong result: {sorted(loaded)}"
    if not np.array_equal(loaded["arr"], want["arr"]) or loaded["arr"].dtype != np.int64:
        return "wrong array"
    store.read_provenance(PROJECT, CELL, key)
    return "stored"


def killloop(root: str, seed: str, trials: str, out: str) -> None:
    rng = random.Random(int(seed))
    makes = os.path.join(os.path.dirname(out), "makes.log")
    counted = os.path.join(os.path.dirname(out), "ops.count")
    scratch = "f" * 32
    _wait([_fork(root, scratch, 10**9, makes, counted)])
    ops = int(Path(counted).read_text())
    store = ArtifactStore(root)
    keys = [f"{i:04x}" + "0" * 28 for i in range(1, 25)]
    budget = int(trials)
    summary: dict[str, Any] = {"ops": ops, "keys": {}}
    for key in keys:
        record: dict[str, Any] = {"trials": [], "checks": []}
        stored_at = None
        for trial in range(budget // len(keys)):
            lefts = [rng.randint(1, ops + 3) for _ in range(rng.choice((1, 1, 2)))]
            exits = _wait([_fork(root, key, left, makes) for left in lefts])
            check = _check(store, key)
            record["trials"].append({"lefts": lefts, "exits": exits})
            record["checks"].append(check)
            if check == "stored":
                stored_at = trial
                break
        if stored_at is None:  # finish it without kills
            record["finish"] = _wait([_fork(root, key, 10**9, makes)])
            record["checks"].append(_check(store, key))
        starts_before = _starts(makes, key)
        record["final"] = _wait([_fork(root, key, 10**9, makes), _fork(root, key, 10**9, makes)])
        record["starts_after_final"] = _starts(makes, key) - starts_before
        record["stored_at"] = stored_at
        summary["keys"][key] = record
    kills = Path(root, "..", "kills.log")
    summary["killed_at"] = kills.read_text().splitlines() if kills.exists() else []
    Path(out).write_text(json.dumps(summary, indent=1))


def _starts(makes: str, key: str) -> int:
    try:
        lines = Path(makes).read_text().splitlines()
    except FileNotFoundError:
        return 0
    return sum(1 for line in lines if line.startswith("start") and line.endswith(key))


if __name__ == "__main__":
    sys.addaudithook(_audit)
    command, *rest = sys.argv[1:]
    {"hold": hold, "killloop": killloop}[command](*rest)
