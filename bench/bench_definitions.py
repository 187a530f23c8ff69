"""Definitions load time, against plain Dagster definitions of the same shape.

    .venv/bin/python bench/bench_definitions.py              # both cases, median of 3
    .venv/bin/python bench/bench_definitions.py --repeat 5
    .venv/bin/python bench/bench_definitions.py --profile sweep   # cProfile of our side
    .venv/bin/python bench/bench_definitions.py --calls   # function calls, tracked objects

What a code server (`dagster api grpc`, `dagster dev`, `dagster definitions validate`) does on
load, timed in a fresh interpreter per measurement so that no module or lru cache carries over:

  import    `import dagster` (plain) or `import dagster, further_dagster` (ours)
  build     define the cells / assets and the `Definitions` (`build_definitions` for ours)
  resolve   `defs.get_repository_def()` (the asset graph, jobs, partitions) and the snapshot a
            code server sends: `RepositorySnap.from_def(repo, defer_snapshots=True)`, serialized

Cases, each against a baseline of plain Dagster assets built in the same run:

  (a) sweep   one cell swept by a dependent's `VAR` of 10,000 values (10,000 partitions) and
              the dependent; baseline: an asset with a 10,000-key StaticPartitionsDefinition
              (keys `x=0` ... `x=9999`, the keys ours gets) and an unpartitioned dependent.
              Target: within 1.5x.
  (b) chain   1,000 cells, each requiring the previous one; baseline: 1,000 plain assets, each
              with the previous one as its input. Target: within 1.25x.

Each figure is the median over --repeat fresh subprocesses; the runs of ours and of plain
Dagster alternate, so drift of the machine's load hits both alike. The last column divides the
fastest run of each side (load only adds time, so on a shared machine it is the steadier
figure; raise --repeat there).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

CASES = {
    # name: (label, size, target ratio)
    "sweep": ("(a) sweep of {n:,} points + dependent", 10_000, 1.5),
    "chain": ("(b) chain of {n:,} cells", 1_000, 1.25),
}
PHASES = ("import", "build", "resolve")


# --------------------------------------------------------------------------- worker side
# Runs in a fresh interpreter: `bench_definitions.py --worker CASE SIDE N`.


def _ours_sweep(n: int):  # type: ignore[no-untyped-def]
    # `fd.Specs`, not `Specs`: a class body named `Specs` cannot see a local of that name
    import further_dagster as fd
    from further_dagster import VAR, Cell, Project, Req, build_definitions

    project = Project("bench_sweep", description=f"a sweep of {n} points")

    class Point(Cell, project=project):
        """One point of the sweep."""

        class Specs(fd.Specs):
            x: int = 0

        contributions = {"value": int}

        def make(self):  # type: ignore[no-untyped-def]
            return {"value": self.specs.x}

    class Summary(Cell, project=project):
        """Sums the sweep."""

        req_cells = {"points": Req("point", x=VAR(list(range(n))))}
        contributions = {"total": int}

        def make(self):  # type: ignore[no-untyped-def]
            return {"total": sum(p.value for p in self.inputs["points"])}

    return build_definitions(project)


def _plain_sweep(n: int):  # type: ignore[no-untyped-def]
    import dagster as dg

    partitions = dg.StaticPartitionsDefinition([f"x={i}" for i in range(n)])

    @dg.asset(key=["bench_sweep", "point"], group_name="bench_sweep", partitions_def=partitions)
    def point(context) -> int:  # type: ignore[no-untyped-def]
        """One point of the sweep."""
        return int(context.partition_key.split("=")[1])

    @dg.asset(
        key=["bench_sweep", "summary"],
        group_name="bench_sweep",
        ins={"points": dg.AssetIn(key=["bench_sweep", "point"])},
    )
    def summary(points: dict) -> int:  # type: ignore[type-arg]  # the baseline as it was
        """Sums the sweep."""
        return sum(points.values())

    return dg.Definitions(assets=[point, summary])


def _make_chain_cell(self):  # type: ignore[no-untyped-def]
    prev = self.inputs["prev"].value if "prev" in self.inputs else 0
    return {"value": prev + self.specs.i}


def _ours_chain(n: int):  # type: ignore[no-untyped-def]
    # as bench.chain_project.chain(n), without that module's import-time build of 100 cells
    from further_dagster import Cell, Project, Req, Specs, build_definitions

    project = Project("bench_chain", description=f"a chain of {n} trivial cells")
    previous: str | None = None
    for i in range(n):
        attrs = {
            "__module__": __name__,
            "__doc__": f"Trivial cell {i} of {n}.",
            "Specs": type("Specs", (Specs,), {"__annotations__": {"i": int}, "i": i}),
            "contributions": {"value": int},
            "req_cells": {"prev": Req(previous)} if previous else {},
            "make": _make_chain_cell,
        }
        type(f"Cell{i}", (Cell,), attrs, project=project, name=f"c{i:04d}")
        previous = f"c{i:04d}"
    return build_definitions(project)


def _plain_chain(n: int):  # type: ignore[no-untyped-def]
    import dagster as dg

    def make(i: int):  # type: ignore[no-untyped-def]
        doc = f"Trivial cell {i} of {n}."
        key = ["bench_chain", f"c{i:04d}"]
        if i == 0:

            @dg.asset(key=key, group_name="bench_chain", code_version="1", description=doc)
            def first() -> int:
                return 0

            return first

        @dg.asset(
            key=key,
            group_name="bench_chain",
            code_version="1",
            description=doc,
            ins={"prev": dg.AssetIn(key=["bench_chain", f"c{i - 1:04d}"])},
        )
        def cell(prev: int) -> int:
            return prev + i

        return cell

    return dg.Definitions(assets=[make(i) for i in range(n)])


BUILDERS = {
    ("sweep", "ours"): _ours_sweep,
    ("sweep", "plain"): _plain_sweep,
    ("chain", "ours"): _ours_chain,
    ("chain", "plain"): _plain_chain,
}


def _resolve(defs) -> int:  # type: ignore[no-untyped-def]
    from dagster._core.remote_representation.external_data import RepositorySnap
    from dagster._serdes import serialize_value

    repo = defs.get_repository_def()
    snap = RepositorySnap.from_def(repo, defer_snapshots=True)  # as the gRPC code server does
    return len(serialize_value(snap))


def _now() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def worker(case: str, side: str, n: int) -> dict[str, float]:
    # Dagster walks a job's graph recursively from nodes in set order (hash-randomized), so a
    # 1,000-deep chain overflows the default limit in some interpreters; both sides get this.
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 20_000))
    t0, c0 = _now()
    import dagster  # noqa: F401

    if side == "ours":
        import further_dagster  # noqa: F401
    t1, c1 = _now()
    defs = BUILDERS[case, side](n)
    t2, c2 = _now()
    size = _resolve(defs)
    t3, c3 = _now()
    repo = defs.get_repository_def()
    assets = len(repo.asset_graph.get_all_asset_keys())
    return {
        "import": t1 - t0,
        "build": t2 - t1,
        "resolve": t3 - t2,
        "total": t3 - t0,
        # CPU seconds of the process: less sensitive than wall time to other processes' load
        "cpu": c3 - c0,
        "snapshot_bytes": size,
        "assets": assets,
    }


# --------------------------------------------------------------------------- parent side


def _env(tmp: str, src: Path) -> dict[str, str]:
    env = dict(os.environ)
    path = [str(src)] + ([str(ROOT)] if src != ROOT else []) + [env.get("PYTHONPATH", "")]
    # A code server imports from .pyc files. With PYTHONDONTWRITEBYTECODE set (as in some
    # sandboxes) the warm-up runs would write none, and every run would compile our ~190
    # modules from source (~0.3 s) while Dagster's site-packages .pyc files are used: the
    # workers write theirs, both sides alike, under the temporary directory instead.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.update(
        {
            "PYTHONPATH": os.pathsep.join(path).rstrip(os.pathsep),
            "PYTHONPYCACHEPREFIX": str(Path(tmp) / "pycache"),
            "FURTHER_ROOT": str(Path(tmp) / "further"),
            "DAGSTER_HOME": str(Path(tmp) / "dagster_home"),
        }
    )
    (Path(tmp) / "dagster_home").mkdir(exist_ok=True)
    return env


def run_worker(case: str, side: str, n: int, env: dict[str, str]) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--worker", case, side, str(n)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[1:])} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    result: dict[str, float] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def bench(case: str, n: int, repeat: int, env: dict[str, str]) -> dict[str, dict[str, float]]:
    runs: dict[str, list[dict[str, float]]] = {"ours": [], "plain": []}
    run_worker(case, "plain", n, env)  # warm the page cache / .pyc files of both sides once
    run_worker(case, "ours", n, env)
    for _ in range(repeat):
        for side in ("plain", "ours"):
            runs[side].append(run_worker(case, side, n, env))
    out = {
        side: {k: statistics.median(r[k] for r in rs) for k in (*PHASES, "total", "cpu", "assets")}
        for side, rs in runs.items()
    }
    for side, rs in runs.items():
        # other processes' load only ever adds time: the least disturbed run of each side
        out[side]["min_total"] = min(r["total"] for r in rs)
        out[side]["min_cpu"] = min(r["cpu"] for r in rs)
    return out


def calls_worker(case: str, side: str, n: int) -> dict[str, float]:
    """Python function calls and garbage-collector-tracked objects of build + resolve: a
    figure that the load of other processes does not move (CPU time on a shared 2-core machine
    varies by +-15%), for comparing two trees back to back."""
    import cProfile
    import gc
    import pstats

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 20_000))
    import dagster  # noqa: F401

    if side == "ours":
        import further_dagster.dagster  # noqa: F401
    gc.collect()
    before = len(gc.get_objects())
    prof = cProfile.Profile()
    prof.enable()
    defs = BUILDERS[case, side](n)
    _resolve(defs)
    prof.disable()
    gc.collect()
    stats: Any = pstats.Stats(prof)  # total_calls is not in the stubs
    return {"calls": stats.total_calls, "objects": len(gc.get_objects()) - before}


def calls(cases: list[str], sizes: dict[str, int], env: dict[str, str]) -> None:
    print("| case | calls ours / plain (M) | ratio | tracked objects ours / plain | ratio |")
    print("|---|---:|---:|---:|---:|")
    for case in cases:
        got = {}
        for side in ("plain", "ours"):
            cmd = [sys.executable, __file__, "--calls-worker", case, side, str(sizes[case])]
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
            if proc.returncode != 0:
                raise SystemExit(f"{' '.join(cmd[1:])} exited {proc.returncode}:\n{proc.stderr}")
            got[side] = json.loads(proc.stdout.strip().splitlines()[-1])
        o, p = got["ours"], got["plain"]
        print(
            f"| {CASES[case][0].format(n=sizes[case])} | {o['calls'] / 1e6:.2f} / "
            f"{p['calls'] / 1e6:.2f} | {o['calls'] / p['calls']:.2f}x | {o['objects']:,} / "
            f"{p['objects']:,} | {o['objects'] / max(p['objects'], 1):.2f}x |"
        )


def profile(case: str, n: int, env: dict[str, str], top: int) -> None:
    import pstats

    out = Path(env["DAGSTER_HOME"]).parent / f"{case}.prof"
    code = (
        "import cProfile\nimport bench.bench_definitions as b\n"
        "p = cProfile.Profile()\np.enable()\n"
        f"b.worker({case!r}, 'ours', {n})\n"
        f"p.disable()\np.dump_stats({str(out)!r})\n"
    )
    cwd = Path(env["DAGSTER_HOME"]).parent  # not ROOT: "" on sys.path would beat --src
    subprocess.run([sys.executable, "-c", code], env=env, check=True, cwd=cwd)
    stats = pstats.Stats(str(out))
    print(f"\ncProfile of ours, {case} (n={n}), by cumulative time:\n")
    stats.sort_stats("cumulative").print_stats(top)
    print("\nby own time:\n")
    stats.sort_stats("tottime").print_stats(top)
    print("\nfurther_dagster's own functions, by cumulative time:\n")
    stats.sort_stats("cumulative").print_stats(r"further_dagster/(?!.*bench)", top)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="fresh subprocesses per figure")
    parser.add_argument("--case", choices=sorted(CASES), action="append", help="default: all")
    parser.add_argument("--sweep-points", type=int, default=CASES["sweep"][1])
    parser.add_argument("--chain-cells", type=int, default=CASES["chain"][1])
    parser.add_argument("--profile", choices=sorted(CASES), help="cProfile our side of a case")
    parser.add_argument("--top", type=int, default=30, help="rows of the profile to print")
    parser.add_argument(
        "--src",
        type=Path,
        default=ROOT,
        help="the directory whose further_dagster is measured (default: this checkout), "
        "e.g. one made by `git archive HEAD further_dagster | tar -x -C DIR`",
    )
    parser.add_argument(
        "--calls",
        action="store_true",
        help="count Python function calls and tracked objects of build + resolve instead "
        "(one run per side; independent of the machine's load)",
    )
    parser.add_argument("--worker", nargs=3, metavar=("CASE", "SIDE", "N"), help=argparse.SUPPRESS)
    parser.add_argument("--calls-worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        case, side, n = args.worker
        print(json.dumps(worker(case, side, int(n))))
        return
    if args.calls_worker:
        case, side, n = args.calls_worker
        print(json.dumps(calls_worker(case, side, int(n))))
        return

    sizes = {"sweep": args.sweep_points, "chain": args.chain_cells}
    with tempfile.TemporaryDirectory(prefix="bench_definitions_") as tmp:
        env = _env(tmp, args.src.resolve())
        if args.profile:
            profile(args.profile, sizes[args.profile], env, args.top)
            return
        if args.calls:
            calls(args.case or list(CASES), sizes, env)
            return
        results = {}
        for case in args.case or list(CASES):
            results[case] = bench(case, sizes[case], args.repeat, env)

    print(
        f"Definitions load, median of {args.repeat} fresh subprocesses "
        f"(import + build + resolve), further_dagster from {args.src}\n"
    )
    print(
        "| case | ours s | plain s | ratio | target | met | CPU ours / plain s | CPU ratio "
        "| min of runs: ratio / CPU ratio |"
    )
    print("|---|---:|---:|---:|---:|---|---:|---:|---:|")
    for case, r in results.items():
        label, target = CASES[case][0].format(n=sizes[case]), CASES[case][2]
        ratio = r["ours"]["total"] / r["plain"]["total"]
        cpu = r["ours"]["cpu"] / r["plain"]["cpu"]
        low = r["ours"]["min_total"] / r["plain"]["min_total"]
        low_cpu = r["ours"]["min_cpu"] / r["plain"]["min_cpu"]
        met = "yes" if ratio <= target else "no"
        print(
            f"| {label} | {r['ours']['total']:.2f} | {r['plain']['total']:.2f} | "
            f"{ratio:.2f}x | {target:.2f}x | {met} | "
            f"{r['ours']['cpu']:.2f} / {r['plain']['cpu']:.2f} | {cpu:.2f}x | "
            f"{low:.2f}x / {low_cpu:.2f}x |"
        )
    print("\nBy phase (s, ours / plain):\n")
    print("| case | " + " | ".join(PHASES) + " | assets |")
    print("|---|" + "---:|" * (len(PHASES) + 1))
    for case, r in results.items():
        cells = " | ".join(f"{r['ours'][p]:.2f} / {r['plain'][p]:.2f}" for p in PHASES)
        assets = f"{r['ours']['assets']:.0f} / {r['plain']['assets']:.0f}"
        print(f"| {CASES[case][0].format(n=sizes[case])} | {cells} | {assets} |")


if __name__ == "__main__":
    main()
