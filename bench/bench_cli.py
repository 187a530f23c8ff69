"""The Dagster CLI rows of issue 13, each against plain Dagster measured in the same run.

    .venv/bin/python bench/bench_cli.py                 # everything (plain multiprocess: minutes)
    .venv/bin/python bench/bench_cli.py --cells 20      # a shorter chain
    .venv/bin/python bench/bench_cli.py --skip-multiprocess

Rows (each a fresh DAGSTER_HOME and store, wall time of the whole command):

- `dagster asset materialize --select '*'` of a chain of N trivial cells (bench/chain_project.py),
  first run (default executor: steps in-process, instances as waves) and all cached;
- the same chain as plain Dagster assets (defined here), in-process and multiprocess executor;
- the CLI floor: `dagster definitions validate` of the cell chain (load the code location, exit);
- 20 independent cells whose make() sleeps 1 s, in LOCAL (threads) and LOCAL_PROCESSES (2
  cores: processes), against the ideal parallel time;
- the cached chain and the LOCAL sleeping cells again with the event batches off
  (further_dagster/dagster/sqlite_events.py): the baseline of what the batches save;
- `further-dagster materialize` of the cached chain: decided by the engine, no Dagster, no run;
- a sweep of 1,000 points (`--sweep`): its first `further-dagster materialize` (one run) and its
  cached re-run (no run).

This module is also the code location of the plain chain (`plain_defs`) and of the sleeping
cells (`sleepy_defs`), built on first access so that a spawned worker importing the cells does
not import Dagster.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from further_dagster import VAR, Cell, Project, Req, Specs  # noqa: E402

BIN = Path(sys.executable).parent
N_SLEEPY = 20
SLEEP_S = 1.0

sleepy = Project("sleepy", description="independent cells that sleep")


def _sleep_make(self):  # type: ignore[no-untyped-def]
    time.sleep(SLEEP_S)
    return {"value": self.specs.i}


for _i in range(N_SLEEPY):
    # a module attribute: spawned workers unpickle the cell class by name
    globals()[f"Sleep{_i}"] = type(
        f"Sleep{_i}",
        (Cell,),
        {
            "__module__": __name__,
            "__doc__": f"Sleeping cell {_i}.",
            "Specs": type(
                "Specs",
                (Specs,),
                {
                    "__module__": __name__,
                    "__qualname__": f"Sleep{_i}.Specs",
                    "__annotations__": {"i": int},
                    "i": _i,
                },
            ),
            "contributions": {"value": int},
            "make": _sleep_make,
        },
        project=sleepy,
        name=f"s{_i:02d}",
    )


N_SWEEP = int(os.environ.get("FURTHER_BENCH_SWEEP", "1000"))
sweep = Project("bench_sweep", description="a sweep of trivial points")


class Point(Cell, project=sweep):
    """One point of the sweep."""

    class Specs(Specs):
        x: int = 0

    contributions = {"value": int}

    def make(self):  # type: ignore[no-untyped-def]
        return {"value": self.specs.x * 2}


class Total(Cell, project=sweep):
    """Sum over the sweep."""

    req_cells = {"points": Req("point", x=VAR(list(range(N_SWEEP))))}
    contributions = {"value": int}

    def make(self):  # type: ignore[no-untyped-def]
        return {"value": sum(p.value for p in self.inputs["points"])}


def _plain_chain(n: int) -> Any:
    import dagster as dg

    def first() -> int:
        return 0

    def step(prev: int) -> int:
        return prev + 1

    assets = [dg.asset(name="p0000", key_prefix=["plain"])(first)]
    for i in range(1, n):
        ins = {"prev": dg.AssetIn(key=assets[-1].key)}
        assets.append(dg.asset(name=f"p{i:04d}", key_prefix=["plain"], ins=ins)(step))
    return dg.Definitions(assets=assets)


def __getattr__(name: str) -> Any:
    if name == "plain_defs":
        return _plain_chain(int(os.environ.get("FURTHER_BENCH_CHAIN", "100")))
    if name == "sleepy_defs":
        from further_dagster import build_definitions

        return build_definitions(sleepy)
    if name == "sweep_defs":
        from further_dagster import build_definitions

        return build_definitions(sweep)
    raise AttributeError(name)


# --- measuring -----------------------------------------------------------------------------


def _unbatched_dagster(argv: list[str]) -> None:
    """`dagster <argv>` with the event batches of further_dagster/dagster/sqlite_events.py off
    (Dagster's planned events and our events one transaction each, as before them): the
    baseline of the batched rows, measured in the same run."""
    os.environ["DAGSTER_EVENT_BATCH_SIZE"] = "0"
    from contextlib import contextmanager

    import dagster as dg

    dg.DagsterInstance.get()  # as the CLI does: the instance first, then the code location
    from further_dagster.dagster import materialize, sensor, skip_cached, waves

    @contextmanager
    def off(instance: Any) -> Any:
        yield None

    for module in (materialize, sensor, skip_cached, waves):
        module.event_batch = off  # type: ignore[attr-defined]
    from dagster._cli import main as dagster_main

    sys.argv = ["dagster", *argv]
    dagster_main()


def _unbatched(cmd: list[str]) -> list[str]:
    # this module imported (not run as __main__), so that the CLI finds its cells defined once
    code = "import sys; from bench.bench_cli import _unbatched_dagster as u; u(sys.argv[1:])"
    return [sys.executable, "-c", code, *cmd[1:]]


def _env(work: Path, cells: int) -> dict[str, str]:
    home = work / "home"
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    return {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "FURTHER_ROOT": str(work / "store"),
        "FURTHER_BENCH_CHAIN": str(cells),
    }


def _timed(cmd: list[str], env: dict[str, str]) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out[-3000:]}")
    return seconds, out


def _materialize(module: str, attribute: str, config: dict[str, Any] | None = None) -> list[str]:
    cmd = [str(BIN / "dagster"), "asset", "materialize", "-m", module, "-a", attribute]
    cmd += ["--select", "*"]
    if config:
        cmd += ["--config-json", json.dumps(config)]
    return cmd


def _children_cpu() -> float:
    """User + system CPU seconds of this process's finished children (the load of the other
    processes on the machine does not count)."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run_seconds(env: dict[str, str]) -> float:
    """Start to end of the latest run of the instance at $DAGSTER_HOME (the run itself, without
    the CLI's start-up)."""
    import dagster as dg

    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        (run,) = instance.get_runs(limit=1)
        stats = instance.get_run_stats(run.run_id)
        return float((stats.end_time or 0.0) - (stats.start_time or 0.0))


def _fresh(base: Path, name: str, cells: int) -> dict[str, str]:
    work = base / name
    shutil.rmtree(work, ignore_errors=True)
    return _env(work, cells)


def measure(
    cells: int, repeats: int, multiprocess: bool, sweep_points: int, cached_only: bool = False
) -> dict[str, tuple[float, str]]:
    rows: dict[str, tuple[float, str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)

        def median(name: str, cmd: list[str], fresh: bool = True, env: Any = None) -> float:
            times = []
            for _ in range(repeats):
                seconds, out = _timed(cmd, env if env is not None else _fresh(base, name, cells))
                times.append(seconds)
            rows[name] = (statistics.median(times), out)
            return rows[name][0]

        def first_runs(name: str, cmd: list[str], extra: dict[str, str] | None = None) -> None:
            # a first run each time (a fresh home and store): the command, and the run itself
            times, runs = [], []
            for _ in range(repeats):
                env = {**_fresh(base, name, cells), **(extra or {})}
                seconds, out = _timed(cmd, env)
                times.append(seconds)
                runs.append(_run_seconds(env))
            rows[name] = (statistics.median(times), out)
            rows[f"{name}_run"] = (statistics.median(runs), "")

        chain = ("bench.chain_project", "defs")
        if cached_only:
            # the floor and the cached chain, alternating (the rows to iterate on)
            env = _fresh(base, "cached", cells)
            _timed(_materialize(*chain), env)
            floor_cmd = [str(BIN / "dagster"), "definitions", "validate", "-m", chain[0]]
            pairs: dict[str, list[float]] = {}
            for _ in range(repeats):
                for name, cmd in (("floor", floor_cmd), ("cached", _materialize(*chain))):
                    cpu = _children_cpu()
                    pairs.setdefault(name, []).append(_timed(cmd, env)[0])
                    pairs.setdefault(f"{name}_cpu", []).append(_children_cpu() - cpu)
            return {name: (statistics.median(times), "") for name, times in pairs.items()}
        median("floor", [str(BIN / "dagster"), "definitions", "validate", "-m", chain[0]])
        in_process: dict[str, Any] = {"execution": {"config": {"in_process": {}}}}
        median("plain_in_process", _materialize("bench.bench_cli", "plain_defs", in_process))
        if multiprocess:
            config: dict[str, Any] = {"execution": {"config": {"multiprocess": {}}}}
            median("plain_multiprocess", _materialize("bench.bench_cli", "plain_defs", config))
        median("first", _materialize(*chain))
        env = _fresh(base, "cached", cells)
        _timed(_materialize(*chain), env)
        median("cached", _materialize(*chain), env=env)
        median("cached_unbatched", _unbatched(_materialize(*chain)), env=env)
        further = [str(BIN / "further-dagster"), "materialize", "-m", chain[0]]
        median("no_run", further, env=env)
        cores = os.cpu_count() or 1
        for mode, workers in (("LOCAL", N_SLEEPY), ("LOCAL_PROCESSES", cores)):
            config = {"execution": {"config": {"mode": mode, "max_concurrent": workers}}}
            cmd = _materialize("bench.bench_cli", "sleepy_defs", config)
            first_runs(f"sleepy_{mode}", cmd)
            if mode == "LOCAL":
                first_runs(f"sleepy_{mode}_unbatched", _unbatched(cmd))
        if sweep_points:
            points = {"FURTHER_BENCH_SWEEP": str(sweep_points)}
            sweep_cmd = [*further, "-a", "sweep_defs"]
            sweep_cmd[sweep_cmd.index(chain[0])] = "bench.bench_cli"
            first_runs("sweep_first", sweep_cmd, points)
            env = {**_fresh(base, "sweep", cells), **points}
            _timed(sweep_cmd, env)
            median("sweep_no_run", sweep_cmd, env=env)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cells", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--skip-multiprocess", action="store_true")
    parser.add_argument("--sweep", type=int, default=1000, help="points (0: skip the sweep)")
    parser.add_argument(
        "--cached-only",
        action="store_true",
        help="only the CLI floor and the all-cached chain, alternating --repeats times",
    )
    args = parser.parse_args()
    rows = measure(
        args.cells, args.repeats, not args.skip_multiprocess, args.sweep, args.cached_only
    )
    n = args.cells
    floor = rows["floor"][0]
    plain = rows["plain_in_process"][0] if "plain_in_process" in rows else floor
    cores = os.cpu_count() or 1
    # max_concurrent: 20 threads; as many processes as cores
    ideal = {"LOCAL": SLEEP_S, "LOCAL_PROCESSES": SLEEP_S * -(-N_SLEEPY // cores)}

    def row(label: str, key: str, baseline: float, baseline_name: str) -> None:
        if key not in rows:
            return
        seconds = rows[key][0]
        print(f"| {label} | {seconds:.2f} | {seconds / baseline:.2f}x {baseline_name} |")

    print(f"chain of {n} cells; {cores} cores; median of {args.repeats}\n")
    print("| command | wall s | ratio |")
    print("|---|---:|---:|")
    row("`dagster definitions validate` (CLI floor)", "floor", floor, "floor")
    row("plain Dagster chain, in-process executor", "plain_in_process", plain, "plain in-process")
    row(
        "plain Dagster chain, multiprocess executor",
        "plain_multiprocess",
        plain,
        "plain in-process",
    )
    row("cell chain, first run (default executor)", "first", plain, "plain in-process")
    row("cell chain, all cached", "cached", floor, "floor")
    if "cached" in rows:
        per_step = (rows["cached"][0] - floor) / n * 1e3
        print(f"| cell chain, all cached: beyond the floor, per step | {per_step:.1f} ms | |")
    if "cached_cpu" in rows:
        cpu_floor, cpu = rows["floor_cpu"][0], rows["cached_cpu"][0]
        print(f"| CPU s: floor {cpu_floor:.2f}, all cached {cpu:.2f} | |")
        print(f"| CPU beyond the floor, per step | {(cpu - cpu_floor) / n * 1e3:.1f} ms | |")
    row("cell chain, all cached, event batches off", "cached_unbatched", floor, "floor")
    if "cached_unbatched" in rows:
        per_step = (rows["cached_unbatched"][0] - floor) / n * 1e3
        print(f"| same, batches off: beyond the floor, per step | {per_step:.1f} ms | |")
    row("`further-dagster materialize`, all cached (no run)", "no_run", floor, "floor")
    for mode in ("LOCAL", "LOCAL_PROCESSES"):
        label = f"{N_SLEEPY} independent 1 s cells, {mode}"
        row(f"{label}, whole command", f"sleepy_{mode}", floor, "floor")
        row(
            f"{label}, the run (start to end)",
            f"sleepy_{mode}_run",
            ideal[mode],
            f"ideal {ideal[mode]:.0f} s",
        )
        row(
            f"{label}, the run, event batches off",
            f"sleepy_{mode}_unbatched_run",
            ideal[mode],
            f"ideal {ideal[mode]:.0f} s",
        )
    if "sweep_first" in rows:
        points = args.sweep
        row(
            f"sweep of {points} points, first `further-dagster materialize`",
            "sweep_first",
            floor,
            "floor",
        )
        row(f"sweep of {points} points, cached re-run (no run)", "sweep_no_run", floor, "floor")
    if "no_run" in rows:
        print("\nno-run output:", rows["no_run"][1].strip().splitlines()[-1])


if __name__ == "__main__":
    main()
