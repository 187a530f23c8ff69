"""Planning at scale and near-free cached calls (issue #13, the Session rows).

    .venv/bin/python bench/bench_scale.py            # every case, about a minute
    .venv/bin/python bench/bench_scale.py --quick    # skip the 1,010,100-instance grid

Each case runs in its own subprocess, so its peak memory (`ru_maxrss`) is its own:

grid-stored  `Session.plan` of a 100x100x10 grid, all stored: cells a(x) <- b(y) <- c(z), with
             session-level VARs on the three Specs fields (addressed `specs=` for a and b, the
             root value for c): 100 + 10,000 + 100,000 = 110,100 instances.
grid-empty   the same with 100x100x100 (1,010,100 instances) against an empty store.
             Floor for both: per instance one blake2b of a 100-byte payload, one dict insert and
             one `os.path.isdir` (what a plan must at least do: key it, index it, look; a plan
             looks at a mostly missing cell by one listing, engine/presence.py, so the empty
             grid can stat less than its floor). CPU times are printed below the table: on a
             shared machine they are steadier than wall times.
cached-var   a repeat cached `Session.call` with a session-level VAR (100 fits over one shared
             upstream), per instance; floor: one stat + one blake2b per instance.
chain-noop   a no-op re-run of a 10,000-cell chain, whole process (`python -c` importing the
             project and calling its top cell), against the same for a 10,000-cell fan-out.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from further_dagster import VAR, Cell, Project, Req, Session, Specs  # noqa: E402
from further_dagster.store import layout  # noqa: E402


def _grid_project(name: str) -> Any:
    project = Project(name, description="a three-level grid")

    class A(Cell, project=project, name="a"):
        """Level 1."""

        class Specs(Specs):
            x: int = 0

        contributions = {"v": int}

        def make(self):  # type: ignore[no-untyped-def]
            return {"v": self.specs.x}

    class B(Cell, project=project, name="b"):
        """Level 2."""

        class Specs(Specs):
            y: int = 0

        req_cells = {"a": Req("a")}
        contributions = {"v": int}

        def make(self):  # type: ignore[no-untyped-def]
            return {"v": self.specs.y}

    class C(Cell, project=project, name="c"):
        """Level 3."""

        class Specs(Specs):
            z: int = 0

        req_cells = {"b": Req("b")}
        contributions = {"v": int}

        def make(self):  # type: ignore[no-untyped-def]
            return {"v": self.specs.z}

    return project


def _grid_call(n3: int) -> dict[str, Any]:
    return {
        "specs": {
            "grid.a": {"x": VAR(list(range(100)))},
            "grid.b": {"y": VAR(list(range(100)))},
        },
        "z": VAR(list(range(n3))),
    }


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def case_grid_setup(root: str, n3: int) -> dict[str, Any]:
    """Mark every instance of the grid stored (mkdir of each result directory)."""
    _grid_project("grid")
    session = Session(root=root, progress=False)
    plan = session.plan("grid.c", **_grid_call(n3))
    for inst in plan.instances:
        os.makedirs(layout.result_dir_str(root, inst.cell.project.name, inst.cell.name, inst.key))
    return {"instances": len(plan.instances)}


def case_grid(root: str, n3: int) -> dict[str, Any]:
    _grid_project("grid")
    session = Session(root=root, progress=False)
    base = _peak_mib()
    cpu = time.process_time()
    start = time.perf_counter()
    plan = session.plan("grid.c", **_grid_call(n3))
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "cpu_seconds": time.process_time() - cpu,
        "peak_mib": _peak_mib(),
        "base_mib": base,
        "instances": len(plan.instances),
        "missing": len(plan.missing),
    }


def case_floor(root: str, count: int) -> dict[str, Any]:
    base = _peak_mib()
    cpu = time.process_time()
    start = time.perf_counter()
    index: dict[str, tuple[int, str]] = {}
    payload = b"x" * 100
    for i in range(count):
        key = hashlib.blake2b(payload + b"%d" % i, digest_size=16).hexdigest()
        index[key] = (i, key)
        os.path.isdir(os.path.join(root, "p", "c", key, "result"))
    return {
        "seconds": time.perf_counter() - start,
        "cpu_seconds": time.process_time() - cpu,
        "peak_mib": _peak_mib(),
        "base_mib": base,
    }


def case_cached_var(root: str) -> dict[str, Any]:
    project = Project("cv", description="a cached sweep")

    class Data(Cell, project=project, name="data"):
        """The shared upstream."""

        contributions = {"v": int}

        def make(self):  # type: ignore[no-untyped-def]
            return {"v": 1}

    class Fit(Cell, project=project, name="fit"):
        """One point."""

        class Specs(Specs):
            alpha: float = 1.0

        req_cells = {"data": Req("data")}
        contributions = {"w": float}

        def make(self):  # type: ignore[no-untyped-def]
            return {"w": self.inputs["data"].v * self.specs.alpha}

    alphas = VAR([float(i) for i in range(100)])
    session = Session(root=root, progress=False)
    session.call("cv.fit", alpha=alphas)
    plan = session.plan("cv.fit", alpha=alphas)
    n = len(plan.instances)
    repeats = 200
    start = time.perf_counter()
    for _ in range(repeats):
        session.call("cv.fit", alpha=alphas)
    ours = (time.perf_counter() - start) / repeats / n
    dirs = [
        str(session.store.instance_dir(i.cell.project.name, i.cell.name, i.key) / "result")
        for i in plan.instances
    ]
    start = time.perf_counter()
    for _ in range(repeats):
        for d in dirs:
            os.stat(d)
            hashlib.blake2b(d.encode(), digest_size=16).hexdigest()
    floor = (time.perf_counter() - start) / repeats / n
    return {"ours_us": ours * 1e6, "floor_us": floor * 1e6, "instances": n}


_NOOP_SCRIPT = """
import sys, time
start = time.perf_counter()
sys.path.insert(0, {root!r})
from bench.bench_scale import {builder}
from further_dagster import Session
top = {builder}({n})
Session(root={store!r}, progress=False).call(top)
print(time.perf_counter() - start)
"""


def fanout(n: int) -> str:
    """A project `fan_<n>`: one top cell over a swept edge of n - 1 leaf instances."""
    project = Project(f"fan_{n}", description=f"a fan-out of {n} trivial instances")
    leaf_specs = type("Specs", (Specs,), {"__annotations__": {"i": int}, "i": 0})
    leaf = {"__module__": __name__, "__doc__": "A leaf.", "Specs": leaf_specs}
    leaf.update(contributions={"value": int}, make=_leaf_make)
    type("Leaf", (Cell,), leaf, project=project, name="leaf")
    top = {"__module__": __name__, "__doc__": "The top.", "make": _top_make}
    top.update(contributions={"value": int}, req_cells={"l": Req("leaf", i=VAR(range(n - 1)))})
    type("Top", (Cell,), top, project=project, name="top")
    return f"fan_{n}.top"


def chain_top(n: int) -> str:
    """A project `chain_<n>`: cell i requires cell i-1. The cells share one Specs model: a
    pydantic model per cell (bench/chain_project.py) costs ~0.45 ms each to define, 4.5 s for
    10,000, which is the project's definition and not the engine's work."""
    project = Project(f"chain_{n}", description=f"a chain of {n} trivial cells")
    previous: str | None = None
    for i in range(n):
        attrs = {"__module__": __name__, "__doc__": f"Cell {i}.", "make": _chain_make}
        attrs.update(
            contributions={"value": int}, req_cells={"prev": Req(previous)} if previous else {}
        )
        type(f"Cell{i}", (Cell,), attrs, project=project, name=f"c{i:05d}")
        previous = f"c{i:05d}"
    return f"chain_{n}.{previous}"


def _leaf_make(self):  # type: ignore[no-untyped-def]
    return {"value": self.specs.i}


def _top_make(self):  # type: ignore[no-untyped-def]
    return {"value": sum(v.value for v in self.inputs["l"])}


def _chain_make(self):  # type: ignore[no-untyped-def]
    prev = self.inputs["prev"].value if "prev" in self.inputs else 0
    return {"value": prev + 1}


def case_noop(store: str, builder: str, n: int) -> dict[str, Any]:
    """Compute once (setup), then time a whole fresh process re-running the call."""
    script = _NOOP_SCRIPT.format(root=str(ROOT), builder=builder, n=n, store=store)
    env = {**os.environ, "FURTHER_BENCH_CHAIN": "1"}
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, env=env)
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", script], check=True, capture_output=True, text=True, env=env
    )
    return {"seconds": time.perf_counter() - start, "inner": float(proc.stdout.split()[-1])}


def _sub(case: str, *args: Any) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--case", case, *map(str, args)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"case {case} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="skip the 1,010,100-instance grid")
    parser.add_argument("--case", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        name, *rest = args.case
        fn = {
            "grid-setup": lambda: case_grid_setup(rest[0], int(rest[1])),
            "grid": lambda: case_grid(rest[0], int(rest[1])),
            "floor": lambda: case_floor(rest[0], int(rest[1])),
            "cached-var": lambda: case_cached_var(rest[0]),
            "noop": lambda: case_noop(rest[0], rest[1], int(rest[2])),
        }[name]
        print(json.dumps(fn()))
        return
    rows: list[tuple[str, str, str, str, str]] = []
    # CPU seconds of each planning case and its floor: steadier than wall time under load
    cpu: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        stored = os.path.join(tmp, "grid_stored")
        setup = _sub("grid-setup", stored, 10)
        g = _sub("grid", stored, 10)
        f = _sub("floor", stored, setup["instances"])
        cpu.append(f"100x100x10 stored {g['cpu_seconds']:.2f} s (floor {f['cpu_seconds']:.2f} s)")
        rows.append(
            (
                f"Session.plan 100x100x10 ({g['instances']:,} instances), all stored: s",
                f"{f['seconds']:.2f}",
                f"{g['seconds']:.2f}",
                f"{g['seconds'] / f['seconds']:.1f}x",
                "<= 2 s",
            )
        )
        rows.append(
            (
                "  same, peak memory MiB (ru_maxrss)",
                f"{f['peak_mib']:.0f}",
                f"{g['peak_mib']:.0f}",
                f"{g['peak_mib'] / f['peak_mib']:.1f}x",
                "<= 250 MiB",
            )
        )
        if not args.quick:
            empty = os.path.join(tmp, "grid_empty")
            os.makedirs(empty)
            g = _sub("grid", empty, 100)
            f = _sub("floor", empty, g["instances"])
            cpu.append(
                f"100x100x100 empty {g['cpu_seconds']:.2f} s (floor {f['cpu_seconds']:.2f} s)"
            )
            rows.append(
                (
                    f"Session.plan 100x100x100 ({g['instances']:,} instances), empty store: s",
                    f"{f['seconds']:.2f}",
                    f"{g['seconds']:.2f}",
                    f"{g['seconds'] / f['seconds']:.1f}x",
                    "<= 20 s",
                )
            )
            rows.append(
                (
                    "  same, peak memory MiB (ru_maxrss)",
                    f"{f['peak_mib']:.0f}",
                    f"{g['peak_mib']:.0f}",
                    f"{g['peak_mib'] / f['peak_mib']:.1f}x",
                    "<= 2048 MiB",
                )
            )
        c = _sub("cached-var", os.path.join(tmp, "cached_var"))
        rows.append(
            (
                f"repeat cached Session.call, session VAR ({c['instances']} inst): us/inst",
                f"{c['floor_us']:.1f}",
                f"{c['ours_us']:.1f}",
                f"{c['ours_us'] / c['floor_us']:.1f}x",
                "<= 8 us",
            )
        )
        fan = _sub("noop", os.path.join(tmp, "fan"), "fanout", 10_000)
        ch = _sub("noop", os.path.join(tmp, "chain"), "chain_top", 10_000)
        rows.append(
            (
                "no-op re-run, 10,000-cell chain, whole process: s (baseline: fan-out)",
                f"{fan['seconds']:.2f}",
                f"{ch['seconds']:.2f}",
                f"{ch['seconds'] / fan['seconds']:.1f}x",
                "<= 1 s",
            )
        )
    print("| measure | baseline | ours | ratio | target |")
    print("|---|---:|---:|---:|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print("\nCPU time of Session.plan: " + "; ".join(cpu))


if __name__ == "__main__":
    main()
