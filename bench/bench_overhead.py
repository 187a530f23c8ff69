"""Overheads of further_dagster, each against a baseline measured in the same process.

    .venv/bin/python bench/bench_overhead.py            # every part
    .venv/bin/python bench/bench_overhead.py --skip-cli # all but (c), under a minute

(a) a fully cached Session.call, per cell instance, for chains of 10, 100 and 1,000 trivial
    cells; baseline: one os.stat of each instance's result directory (the floor: the store must
    at least look). Target <= 20 us per cached instance.
(b) the overhead per computed cell beyond make(): a first Session.call of the same chains,
    minus the time spent inside make(); baseline: writing each result as one JSON file with an
    atomic rename (the least a durable store does). Target <= 2 ms per computed cell.
(d) the same overhead per computed cell in sweeps of 100 and 1,000 points (`--sweep-max 10000`
    adds 10,000) of one trivial cell, INLINE and LOCAL (threads), and a LOCAL chain of 1,000;
    baseline the same atomic write. Target <= 2 ms per computed cell.
(e) 20 independent cells whose make() sleeps 1 s, LOCAL with 20 threads, in a fresh process
    (imports and the index's creation included, as a first run pays them): the Session call
    against the ideal 1 s. Target <= 1.3x.
(f) the scheduler's own cost per instance (`run_missing` without a store): sweeps of 1,000 and
    10,000 instances on 4 threads whose tasks sleep 0.3 ms each; CPU per instance must not
    grow with the sweep (it did while the scheduler waited with `cf.wait` on every running
    future: quadratic).
(c) `dagster asset materialize --select '*'` of a 100-cell chain (default multiprocess
    executor): the first materialization against the fully cached second one. Target: the
    cached run starts no step process and calls no make(), <= 3 s.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.chain_project import chain  # noqa: E402
from further_dagster import VAR, Cell, Project, Session, Specs  # noqa: E402

MAKE_SECONDS = [0.0]


def _timed_make(original: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def make(self: Any) -> Any:
        start = time.perf_counter()
        try:
            return original(self)
        finally:
            MAKE_SECONDS[0] += time.perf_counter() - start

    return make


def _write_baseline(root: Path, n: int) -> float:
    """Seconds per result written as one JSON file with an atomic rename."""
    out = Path(tempfile.mkdtemp(dir=root))
    start = time.perf_counter()
    for i in range(n):
        tmp = out / f"{i}.tmp"
        tmp.write_text(json.dumps({"value": i}))
        os.rename(tmp, out / f"{i}.json")
    return (time.perf_counter() - start) / n


def bench_sweep(n: int, mode: str, root: Path) -> dict[str, float]:
    """Overhead per computed point of a first sweep of `n` points in `mode`."""
    project = Project(f"bench_sweep_{mode.lower()}_{n}", description="a sweep of trivial points")

    class Point(Cell, project=project, name="point"):
        """One point."""

        class Specs(Specs):
            i: int = 0

        contributions = {"value": int}

        @_timed_make
        def make(self):  # type: ignore[no-untyped-def]
            return {"value": self.specs.i}

    session = Session(root=root, progress=False, mode=mode)
    MAKE_SECONDS[0] = 0.0
    start = time.perf_counter()
    session.call(f"{project.name}.point", i=VAR(list(range(n))))
    overhead = (time.perf_counter() - start - MAKE_SECONDS[0]) / n
    return {"computed_ms": overhead * 1e3, "write_ms": _write_baseline(root, n) * 1e3}


def bench_session(n: int, root: Path, mode: str = "INLINE") -> dict[str, float]:
    project = chain(n, name=f"bench_chain_{n}_{mode.lower()}")
    for cell in project.cells.values():
        cell.make = _timed_make(cell.make)  # type: ignore[method-assign,assignment]
    top = f"{project.name}.c{n - 1:04d}"
    session = Session(root=root, progress=False, mode=mode)

    MAKE_SECONDS[0] = 0.0
    start = time.perf_counter()
    session.call(top)
    first = time.perf_counter() - start
    computed_overhead = (first - MAKE_SECONDS[0]) / n

    repeats = max(3, 3000 // n)
    start = time.perf_counter()
    for _ in range(repeats):
        session.call(top)
    cached = (time.perf_counter() - start) / repeats / n

    plan = session.plan(top)
    result_dirs = [
        str(session.store.instance_dir(i.cell.project.name, i.cell.name, i.key) / "result")
        for i in plan.instances
    ]
    start = time.perf_counter()
    for _ in range(repeats):
        for d in result_dirs:
            os.stat(d)
    stat_baseline = (time.perf_counter() - start) / repeats / n

    write_baseline = _write_baseline(root, n)
    return {
        "cached_us": cached * 1e6,
        "stat_us": stat_baseline * 1e6,
        "computed_ms": computed_overhead * 1e3,
        "write_ms": write_baseline * 1e3,
    }


_SLEEPERS = """
import sys, time
from pathlib import Path
from further_dagster import VAR, Cell, Project, Session, Specs

project = Project("bench_sleepers", description="cells that sleep")


class Sleep(Cell, project=project, name="sleep"):
    \"\"\"Sleeps {seconds} s.\"\"\"

    class Specs(Specs):
        i: int = 0

    contributions = {{"value": int}}

    def make(self):
        time.sleep({seconds})
        return {{"value": self.specs.i}}


session = Session(root=Path(sys.argv[1]), progress=False, mode="LOCAL", max_workers={n})
start = time.perf_counter()
session.call("bench_sleepers.sleep", i=VAR(list(range({n}))))
print(time.perf_counter() - start)
"""


def bench_sleepers(root: Path, n: int = 20, seconds: float = 1.0) -> float:
    """Seconds of a first Session call of `n` sleeping cells in a fresh process."""
    root.mkdir(parents=True, exist_ok=True)
    code = _SLEEPERS.format(n=n, seconds=seconds)
    proc = subprocess.run(
        [sys.executable, "-c", code, str(root)], cwd=ROOT, capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise SystemExit(proc.stdout[-2000:] + proc.stderr[-2000:])
    return float(proc.stdout.strip().splitlines()[-1])


class _SleepyBackend:
    """Completes each instance after 0.3 ms on one of 4 threads, with no store."""

    def __init__(self) -> None:
        import concurrent.futures as cf

        self.pool = cf.ThreadPoolExecutor(4)

    def submit_many(self, insts: Any) -> list[Any]:
        from further_dagster.store import Outcome

        done = Outcome(hit=False, waited=False, key="", path=ROOT, duration_s=0.0, attempts=1)

        def task() -> Any:
            time.sleep(0.0003)
            return done

        return [self.pool.submit(task) for _ in insts]

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self.pool.shutdown(wait=wait, cancel_futures=cancel_futures)

    def abort(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


def bench_scheduler(n: int, root: Path) -> dict[str, float]:
    """Wall and CPU microseconds per instance of `run_missing` itself over an n-point sweep."""
    from further_dagster.engine import scheduler
    from further_dagster.engine.modes import Mode

    project = Project(f"bench_scheduler_{n}", description="a sweep the scheduler runs")

    class Point(Cell, project=project, name="point"):
        """One point."""

        class Specs(Specs):
            i: int = 0

        contributions = {"value": int}

        def make(self):  # type: ignore[no-untyped-def]
            return {"value": self.specs.i}

    plan = Session(root=root, progress=False).plan(f"{project.name}.point", i=VAR(list(range(n))))
    real = vars(scheduler)["make_backend"]
    setattr(scheduler, "make_backend", lambda *a, **k: _SleepyBackend())  # noqa: B010
    try:
        start, cpu = time.perf_counter(), time.process_time()
        scheduler.run_missing(object(), plan.missing, mode=Mode.LOCAL)  # type: ignore[arg-type]
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    finally:
        setattr(scheduler, "make_backend", real)  # noqa: B010
    return {"wall_us": wall / n * 1e6, "cpu_us": cpu / n * 1e6}


def bench_cli(n: int, root: Path) -> dict[str, float]:
    home = root / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "FURTHER_ROOT": str(root / "store"),
        "FURTHER_BENCH_CHAIN": str(n),
    }
    dagster = Path(sys.executable).parent / "dagster"
    cmd = [str(dagster), "asset", "materialize", "-m", "bench.chain_project", "--select", "*"]
    timings, starts = [], []
    for _ in range(2):
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        timings.append(time.perf_counter() - start)
        if proc.returncode != 0:
            raise SystemExit(proc.stdout[-2000:] + proc.stderr[-2000:])
        starts.append((proc.stdout + proc.stderr).count(" - STEP_START - "))
    return {
        "first_s": timings[0],
        "cached_s": timings[1],
        "first_steps": starts[0],
        "cached_steps": starts[1],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--skip-cli", action="store_true", help="skip (c), which takes minutes")
    parser.add_argument("--cli-cells", type=int, default=100)
    parser.add_argument("--sweep-max", type=int, default=1000, help="largest sweep of (d)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        # Once-per-process costs (provenance facts, imports) are paid here, not per cell.
        bench_session(3, root / "warmup")
        print("(a) cached Session.call per instance, (b) overhead per computed cell\n")
        print(
            "| cells | (a) cached us/inst | stat baseline us | ratio | "
            "(b) computed ms/cell | atomic-write baseline ms | ratio |"
        )
        print("|---:|---:|---:|---:|---:|---:|---:|")
        for n in (10, 100, 1000):
            r = bench_session(n, root / f"s{n}")
            print(
                f"| {n} | {r['cached_us']:.1f} | {r['stat_us']:.1f} | "
                f"{r['cached_us'] / r['stat_us']:.1f}x | {r['computed_ms']:.2f} | "
                f"{r['write_ms']:.3f} | {r['computed_ms'] / r['write_ms']:.1f}x |"
            )
        print("\n(d) overhead per computed cell beyond make(), sweeps and a LOCAL chain\n")
        print("| case | mode | computed ms/cell | atomic-write baseline ms | ratio |")
        print("|---|---|---:|---:|---:|")
        sizes = [n for n in (100, 1000, 10_000) if n <= args.sweep_max]
        for n in sizes:
            for mode in ("INLINE", "LOCAL"):
                r = bench_sweep(n, mode, root / f"sweep_{mode}_{n}")
                print(
                    f"| sweep of {n:,} | {mode} | {r['computed_ms']:.2f} | "
                    f"{r['write_ms']:.3f} | {r['computed_ms'] / r['write_ms']:.1f}x |"
                )
        r = bench_session(1000, root / "chain_local", mode="LOCAL")
        print(
            f"| chain of 1,000 | LOCAL | {r['computed_ms']:.2f} | {r['write_ms']:.3f} | "
            f"{r['computed_ms'] / r['write_ms']:.1f}x |"
        )
        runs = sorted(bench_sleepers(root / f"sleepers_{i}") for i in range(3))
        print("\n(e) 20 independent cells sleeping 1 s, LOCAL (20 threads), fresh process\n")
        print("| run | median s | ideal s | ratio |")
        print("|---|---:|---:|---:|")
        print(f"| Session.call, 3 runs | {runs[1]:.2f} | 1.00 | {runs[1]:.2f}x |")
        print("\n(f) the scheduler's own cost per instance, tasks of 0.3 ms on 4 threads\n")
        print("| sweep | wall us/instance | CPU us/instance |")
        print("|---:|---:|---:|")
        for n in (1000, 10_000):
            r = bench_scheduler(n, root / f"scheduler_{n}")
            print(f"| {n:,} | {r['wall_us']:.0f} | {r['cpu_us']:.0f} |")
        if not args.skip_cli:
            n = args.cli_cells
            c = bench_cli(n, root / "cli")
            print(f"\n(c) `dagster asset materialize --select '*'`, chain of {n} cells\n")
            print("| run | wall s | steps started | ratio to first |")
            print("|---|---:|---:|---:|")
            print(f"| first (computes) | {c['first_s']:.1f} | {c['first_steps']} | 1.00 |")
            print(
                f"| second (all cached) | {c['cached_s']:.1f} | {c['cached_steps']} | "
                f"{c['cached_s'] / c['first_s']:.3f} |"
            )


if __name__ == "__main__":
    main()
