"""How fast another process gets a key whose holder died, and how fast Ctrl-C returns.

    .venv/bin/python bench/bench_takeover.py            # default settings (lease 15 s)
    .venv/bin/python bench/bench_takeover.py --quick    # skip the 15 s remote-lock row

Rows (median and max of --repeat runs; the waiter polls every 0.2 s, the default):
  kill -9, same host     a holder process is SIGKILLed inside make(); a waiter in this process
                         takes over (the kernel says the holder's pid is gone)
  SIGTERM                the holder gets SIGTERM: it records `interrupted`, releases its lease,
                         and dies of the signal
  remote-looking lock    a lock written "by another host" (its pid says nothing here) stops
                         heart-beating: taken over when its lease expires (default 15 s)
  Ctrl-C, LOCAL /        SIGINT to a process whose Session runs two one-hour make()s: time until
  LOCAL_PROCESSES        its `call` raises KeyboardInterrupt
Baseline (issue #8, before): 57 s after kill -9 with the 60 s lease (furu: 44 s); Ctrl-C of a
LOCAL Session waited ~20 s for every running make().
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from further_dagster.store import ArtifactStore  # noqa: E402
from further_dagster.store.records import LeaseRecord, utcnow  # noqa: E402

KEY = "0123456789abcdef0123456789abcdef"

HOLDER = """
import sys, time
from pathlib import Path
from further_dagster.store import ArtifactStore
def compute(tmp, logger):
    Path(sys.argv[2]).touch()
    time.sleep(3600)
    return {"v": 1}
ArtifactStore(sys.argv[1]).ensure("bench", "cell", sys.argv[3], compute, {})
"""

CELLS = """
import os, time
from pathlib import Path
from further_dagster import VAR, Cell, Project, Req, Specs
bench_ctrlc = Project("bench_ctrlc")
class Sleepy(Cell, project=bench_ctrlc):
    class Specs(Specs):
        tag: str = "a"
    contributions = {"v": str}
    def make(self):
        (Path(os.environ["BENCH_READY"]) / self.specs.tag).touch()
        time.sleep(3600)
        return {"v": self.specs.tag}
class Both(Cell, project=bench_ctrlc):
    req_cells = {"parts": Req("sleepy", tag=VAR(["a", "b"]))}
    contributions = {"v": list}
    def make(self):
        return {"v": [p.v for p in self.inputs["parts"]]}
"""

SESSION = """
import sys
import bench_ctrlc_cells
from further_dagster import Session
try:
    Session(mode=sys.argv[1], max_workers=2, progress=False).call("bench_ctrlc.both")
except KeyboardInterrupt:
    print("INTERRUPTED", flush=True)
"""


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *extra.pop("path", [])]),
            **extra}  # fmt: skip


def _wait_for(path: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(path)
        time.sleep(0.005)


def _waiter(root: Path, key: str) -> tuple[threading.Thread, list[float]]:
    started: list[float] = []

    def compute(tmp: Path, logger: object) -> dict[str, int]:
        started.append(time.monotonic())
        return {"v": 2}

    store = ArtifactStore(root, wait_timeout_s=120)  # default lease and poll
    thread = threading.Thread(target=store.ensure, args=("bench", "cell", key, compute, {}))
    thread.start()
    return thread, started


def holder_death(work: Path, n: int, sig: signal.Signals) -> float:
    root, ready, key = work / f"root-{sig.name}-{n}", work / f"ready-{sig.name}-{n}", f"{n:032x}"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(root), str(ready), key],
                              env=_env(), stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        _wait_for(ready)
        thread, started = _waiter(root, key)
        time.sleep(0.5)  # the waiter is polling the live lease
        t0 = time.monotonic()
        holder.send_signal(sig)
        thread.join(120)
        return started[0] - t0
    finally:
        holder.kill()
        holder.wait()


def remote_lock(work: Path) -> float:
    root = work / "root-remote"
    inst = ArtifactStore(root).instance_dir("bench", "cell", KEY)
    inst.mkdir(parents=True)
    record = LeaseRecord(
        token="f" * 32, pid=os.getpid(), host="another-host.example", acquired_at=utcnow(),
        lease_s=ArtifactStore(root).lease_s,
    )  # fmt: skip
    (inst / "lock").write_text(record.model_dump_json())
    t0 = time.monotonic()
    thread, started = _waiter(root, KEY)
    thread.join(120)
    return started[0] - t0


def ctrl_c(work: Path, n: int, mode: str) -> float:
    ready = work / f"ready-{mode}-{n}"
    ready.mkdir()
    module_dir = work / "cells"
    module_dir.mkdir(exist_ok=True)
    (module_dir / "bench_ctrlc_cells.py").write_text(CELLS)
    env = _env(path=[str(module_dir)], FURTHER_ROOT=str(work / f"root-{mode}-{n}"),
               BENCH_READY=str(ready))  # fmt: skip
    child = subprocess.Popen([sys.executable, "-c", SESSION, mode], env=env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while len(list(ready.iterdir())) < 2:
            if time.monotonic() > deadline:
                raise TimeoutError(mode)
            time.sleep(0.005)
        t0 = time.monotonic()
        child.send_signal(signal.SIGINT)
        assert child.stdout is not None
        line = child.stdout.readline()
        elapsed = time.monotonic() - t0
        assert line.strip() == "INTERRUPTED", line
        child.wait(30)
        return elapsed
    finally:
        child.kill()
        child.wait()


def _row(name: str, values: list[float], note: str) -> None:
    print(f"| {name} | {len(values)} | {statistics.median(values) * 1000:.0f} | "
          f"{max(values) * 1000:.0f} | {note} |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="skip the remote-lock row")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        print("| what | runs | median ms | max ms | settings |")
        print("|---|---:|---:|---:|---|")
        kill = [holder_death(work, n, signal.SIGKILL) for n in range(args.repeat)]
        _row("takeover after kill -9, same host", kill, "lease 15 s, poll 0.2 s")
        term = [holder_death(work, 100 + n, signal.SIGTERM) for n in range(args.repeat)]
        _row("takeover after SIGTERM", term, "lease 15 s, poll 0.2 s")
        if not args.quick:
            _row("takeover of a remote-looking lock", [remote_lock(work)], "lease 15 s")
        for mode in ("LOCAL", "LOCAL_PROCESSES"):
            runs = [ctrl_c(work, n, mode) for n in range(max(1, args.repeat // 2))]
            _row(f"Ctrl-C of a {mode} Session", runs, "2 running make()s")


if __name__ == "__main__":
    main()
