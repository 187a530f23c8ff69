"""Incrementing cells and ITER loops, each against a baseline measured in the same process.

    .venv/bin/python bench/bench_increments.py            # 1,000-step figures, 10,000-step resume
    .venv/bin/python bench/bench_increments.py --resume 2000   # a quicker resume part

(a) overhead per stored increment beyond make_increment(): a first call of `exactly=N`; baseline:
    the same for a plain chain of N cells (each cell requires the one before) beyond make().
    Target <= 2 ms per increment, like any computed cell.
(b) resolving N instances: planning `exactly=N` on an empty store, and an ITER loop of N
    iterations; baseline: planning the plain chain of N cells, per instance.
(c) resuming a chain of R stored increments (default 10,000): finding the last stored increment
    (`StoredIncrements`, a galloping + binary search of stats); baseline: one stat of every
    increment's result directory (what a scan would cost at least). Target <= 50 ms. Also the
    whole call `more=1` (plan, count, compute one increment, load it).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.chain_project import chain  # noqa: E402
from further_dagster import (  # noqa: E402
    ITER,
    Cell,
    IncrementingCell,
    Increments,
    Project,
    Req,
    Session,
    Specs,
)
from further_dagster.core.iterative import increment_key  # noqa: E402
from further_dagster.engine.increments import StoredIncrements  # noqa: E402

MAKE_SECONDS = [0.0]
project = Project("bench_increments")


class Walk(IncrementingCell, project=project):
    class Specs(Specs):
        seed: int = 0

    contributions = {"value": int}

    def make_increment(self, previous):  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        value = (previous.value if previous is not None else self.specs.seed) + 1
        MAKE_SECONDS[0] += time.perf_counter() - start
        return {"value": value}


class Loop(Cell, project=project):
    class Specs(Specs):
        iteration: int = 0

    req_cells = {"prev": Req("loop", iteration=ITER(-1), switch=lambda s: s.iteration > 0)}
    contributions = {"value": int}

    def make(self):  # type: ignore[no-untyped-def]
        return {"value": self.specs.iteration}


def _timed(original):  # type: ignore[no-untyped-def]
    def make(self):  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        try:
            return original(self)
        finally:
            MAKE_SECONDS[0] += time.perf_counter() - start

    return make


def overhead(n: int, root: Path) -> dict[str, float]:
    plain = chain(n, name=f"bench_plain_{n}")
    for cell in plain.cells.values():
        cell.make = _timed(cell.make)
    top = f"{plain.name}.c{n - 1:04d}"
    session = Session(project, plain, root=root, progress=False)

    start = time.perf_counter()
    plan = session.plan(top)
    plain_plan = (time.perf_counter() - start) / len(plan.instances)
    MAKE_SECONDS[0] = 0.0
    start = time.perf_counter()
    session.call(top)
    plain_ms = (time.perf_counter() - start - MAKE_SECONDS[0]) / n * 1e3

    instruction = Increments(exactly=n)
    start = time.perf_counter()
    plan = session.plan("bench_increments.walk", increments=instruction)
    inc_plan = (time.perf_counter() - start) / len(plan.instances)
    MAKE_SECONDS[0] = 0.0
    start = time.perf_counter()
    result = session.call("bench_increments.walk", increments=instruction)
    inc_ms = (time.perf_counter() - start - MAKE_SECONDS[0]) / n * 1e3
    assert result.increment == n and result.value == n

    start = time.perf_counter()
    plan = session.plan("bench_increments.loop", iteration=n - 1)
    iter_plan = (time.perf_counter() - start) / len(plan.instances)
    return {
        "plain_ms": plain_ms,
        "inc_ms": inc_ms,
        "plain_plan_us": plain_plan * 1e6,
        "inc_plan_us": inc_plan * 1e6,
        "iter_plan_us": iter_plan * 1e6,
    }


def resume(n: int, root: Path) -> dict[str, float]:
    session = Session(project, root=root, progress=False)
    stored = session.call("bench_increments.walk", seed=7, increments=Increments(exactly=n))
    base = session.store.read_provenance("bench_increments", "walk", stored.key).extra
    counter = StoredIncrements(session.store)
    repeats = 20
    start = time.perf_counter()
    for _ in range(repeats):
        assert counter(Walk, str(base["increment_base"])) == n
    find_ms = (time.perf_counter() - start) / repeats * 1e3

    plan = session.plan("bench_increments.walk", seed=7, increments=Increments(exactly=n))
    base_key = str(base["increment_base"])
    dirs = [
        session.store.instance_dir("bench_increments", "walk", increment_key(base_key, j))
        / "result"
        for j in range(1, n + 1)
    ]
    start = time.perf_counter()
    for d in dirs:
        os.stat(d)
    scan_ms = (time.perf_counter() - start) * 1e3
    assert not plan.missing

    start = time.perf_counter()
    best = session.plan("bench_increments.walk", seed=7, increments=Increments(best=True))
    plan_ms = (time.perf_counter() - start) * 1e3
    assert best.roots[0].increment == n and len(best.instances) == 1
    start = time.perf_counter()
    more = session.call("bench_increments.walk", seed=7, increments=Increments(more=1))
    more_ms = (time.perf_counter() - start) * 1e3
    assert more.increment == n + 1
    return {"find_ms": find_ms, "scan_ms": scan_ms, "plan_ms": plan_ms, "more_ms": more_ms}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=1000, help="steps for (a) and (b)")
    parser.add_argument("--resume", type=int, default=10_000, help="stored increments for (c)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        overhead(3, root / "warmup")  # once-per-process costs are paid here
        r = overhead(args.n, root / "a")
        print(f"(a) overhead per computed step beyond make, {args.n} steps\n")
        print("| run | ms per step | ratio |")
        print("|---|---:|---:|")
        print(f"| plain chain of cells (baseline) | {r['plain_ms']:.2f} | 1.00 |")
        print(
            f"| incrementing cell, exactly={args.n} | {r['inc_ms']:.2f} | "
            f"{r['inc_ms'] / r['plain_ms']:.2f} |"
        )
        print(f"\n(b) planning, us per resolved instance, {args.n} steps\n")
        print("| plan | us per instance | ratio |")
        print("|---|---:|---:|")
        print(f"| plain chain of cells (baseline) | {r['plain_plan_us']:.1f} | 1.00 |")
        for label, key in (("increments", "inc_plan_us"), ("ITER loop", "iter_plan_us")):
            print(f"| {label} | {r[key]:.1f} | {r[key] / r['plain_plan_us']:.2f} |")
        c = resume(args.resume, root / "c")
        print(f"\n(c) resuming a chain of {args.resume} stored increments\n")
        print("| step | ms | ratio to the scan |")
        print("|---|---:|---:|")
        print(f"| stat of every increment (baseline scan) | {c['scan_ms']:.2f} | 1.000 |")
        print(
            f"| find the last stored increment | {c['find_ms']:.3f} | "
            f"{c['find_ms'] / c['scan_ms']:.3f} |"
        )
        print(
            f"| plan best=True (resolve + count) | {c['plan_ms']:.2f} | "
            f"{c['plan_ms'] / c['scan_ms']:.3f} |"
        )
        print(
            f"| call more=1 (plan, compute one, load) | {c['more_ms']:.2f} | "
            f"{c['more_ms'] / c['scan_ms']:.3f} |"
        )


if __name__ == "__main__":
    main()
