"""Slurm: one job array per sweep against one sbatch per instance, and the cached re-run.

    .venv/bin/python bench/bench_slurm.py               # 100 points (FURTHER_BENCH_SWEEP)

Starts the project's single-node Slurm (scripts/slurm-cluster) if it is not running, and stops
it again at the end in that case. A 100-point sweep of a trivial cell (bench/slurm_sweep_cells.py):

(a) the engine alone (`run_missing` in mode SLURM, what a Session or a fan-out step runs):
    one job array for the 100 instances, against one sbatch per instance (the baseline);
(b) through Dagster: a run of the swept asset's whole partition range with the Slurm step
    executor (`steps: multiprocess`: the step fans out as one job array), against the same
    run with `slurm.array: false` (one sbatch per instance); the same run from the run's
    process (`steps: in_process`, the default: one array in one pass); then the cached
    re-run of the same sweep (target: no job submitted, under 10 s).

Columns: sbatch calls (Dagster rows: the run's log lines, one per sbatch, since accounting
may record a job late and count it for the next run; engine rows: accounting), submission
time (summed over sbatch calls),
wall time, and each ratio against the baseline of the same part, measured in this process.

    .venv/bin/python bench/bench_slurm.py --steps       # independent Dagster steps

(e) Dagster, six independent cells and a join (bench/slurm_sweep.py `many_defs`: seven steps,
    seven instances): the run's instances from the run's process in one pass (`steps:
    in_process`, the default: one array for the six, the join held by `--dependency`),
    against the Slurm step handler (`steps: multiprocess`: a Slurm job per step, each level
    launched when the previous one finished), alternating, median of `FURTHER_BENCH_REPEAT`
    (default 3) fresh stores each.

    .venv/bin/python bench/bench_slurm.py --static      # the 3-level sweep and task imports

(c) a 3-level sweep (`bench_grid`: load -> fit -> score, each over a 10 x 10 grid, 300
    instances): the static chapter in one pass with Slurm's dependencies, against one wave
    of ready instances at a time (`SlurmSettings(dependencies=False)`, the baseline);
(d) what a task pays to import the cells of example_project (README layout: the package's
    `__init__` calls build_definitions): importing `example_project.cells` the ordinary way
    (the package, hence Dagster: what a task did before) against the task's own import
    (the package entered bare), each in a fresh interpreter, median of 5.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SCRIPT = ROOT / "scripts" / "slurm-cluster"


def cluster(command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SCRIPT), command], cwd=ROOT, capture_output=True, text=True)


def export_cluster_env() -> None:
    for line in cluster("env").stdout.splitlines():
        if line.startswith("export ") and "=" in line:
            name, _, value = line[len("export ") :].partition("=")
            os.environ[name] = value.strip("'\"")


def sbatch_calls() -> set[str]:
    out = subprocess.run(
        ["sacct", "-a", "-X", "-n", "-P", "-o", "JobID", "-S", "2000-01-01"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {line.split("_")[0] for line in out.split() if line.strip()}


def bench_engine(root: Path, array: bool) -> dict[str, Any]:
    from bench.slurm_sweep_cells import Total
    from further_dagster import Session
    from further_dagster.engine import Mode, run_missing
    from further_dagster.engine.backends.slurm import SlurmSettings, Submission

    session = Session(root=root, progress=False)
    plan = session.plan(Total)
    missing = [i for i in plan.missing if i.cell.name == "point"]
    seconds: list[float] = []

    def on_submit(submission: Submission) -> None:
        seconds.append(submission.seconds)

    before = sbatch_calls()
    start = time.perf_counter()
    report = run_missing(
        session.store,
        missing,
        mode=Mode.SLURM,
        slurm=SlurmSettings(array=array, on_submit=on_submit, folder=root / "jobs"),
    )
    wall = time.perf_counter() - start
    assert len(report.computed) == len(missing), report.summary()
    return {
        "sbatch": len(sbatch_calls() - before),
        "submit_s": sum(seconds),
        "wall_s": wall,
        "instances": len(missing),
    }


def bench_dagster(
    root: Path, array: bool, instance: Any, steps: str = "multiprocess", attribute: str = "defs"
) -> dict[str, Any]:
    import dagster as dg
    from dagster._core.definitions.reconstruct import ReconstructableRepository

    from bench import slurm_sweep
    from further_dagster.dagster import location_of

    tags: dict[str, str] = {}
    if attribute == "defs":
        selection = [dg.AssetKey(["bench_sweep", "point"])]
        sweep: Any = location_of(slurm_sweep.defs)
        keys = sweep.asset_by_key[selection[0]].partitions.keys
        tags = {
            "dagster/asset_partition_range_start": keys[0],
            "dagster/asset_partition_range_end": keys[-1],
        }
    else:
        many: Any = location_of(getattr(slurm_sweep, attribute))
        selection = list(many.asset_by_key)
    repo = ReconstructableRepository.for_module(
        "bench.slurm_sweep", attribute, working_directory=str(ROOT)
    )
    slurm = {"array": array, "poll_interval_s": 0.2, "check_health_interval_s": 1}
    config = {"execution": {"config": {"steps": steps, "slurm": slurm}}}
    before = sbatch_calls()
    start = time.perf_counter()
    with dg.execute_job(
        repo.get_reconstructable_job("__ASSET_JOB"),
        instance=instance,
        asset_selection=selection,
        tags=tags,
        run_config=config,
    ) as result:
        assert result.success
        started = sum(e.event_type_value == "STEP_START" for e in result.all_events)
        run_id = result.run_id
    wall = time.perf_counter() - start
    # engine events (the wave's sbatch lines) carry their text in `message` only
    messages = [entry.user_message or entry.message or "" for entry in instance.all_logs(run_id)]
    submit_s = 0.0
    submissions = 0  # one log line per sbatch: accounting lags (an earlier run's late job)
    for message in messages:  # "further: submitted N instance(s) ... in 0.123s"
        if message.startswith(("further: submitted", "Submitted step")):  # arrays, step jobs
            submit_s += float(message.rsplit(" in ", 1)[1].rstrip("s"))
            submissions += 1
    accounted = len(sbatch_calls() - before)
    if accounted != submissions:
        print(f"  (accounting shows {accounted} new job(s) for {submissions} sbatch call(s))")
    return {"sbatch": submissions, "submit_s": submit_s, "wall_s": wall,
            "steps": started}  # fmt: skip


def bench_grid(root: Path, dependencies: bool) -> dict[str, Any]:
    from bench.slurm_sweep_cells import GRID, Score
    from further_dagster import Session
    from further_dagster.engine import Mode, run_missing
    from further_dagster.engine.backends.slurm import SlurmSettings, Submission

    session = Session(root=root, progress=False)
    missing = session.plan(Score, params=GRID).missing
    seconds: list[float] = []

    def on_submit(submission: Submission) -> None:
        seconds.append(submission.seconds)

    before = sbatch_calls()
    start = time.perf_counter()
    settings = SlurmSettings(
        dependencies=dependencies, on_submit=on_submit, folder=root / "jobs", poll_s=0.2
    )
    report = run_missing(session.store, missing, mode=Mode.SLURM, slurm=settings)
    wall = time.perf_counter() - start
    assert len(report.computed) == len(missing), report.summary()
    return {"sbatch": len(sbatch_calls() - before), "submit_s": sum(seconds), "wall_s": wall}


_IMPORT = """
import sys, time
sys.path.insert(0, {root!r})
start = time.perf_counter()
if {bare!r}:
    from further_dagster.engine.backends.slurm_task import _enter_bare
    _enter_bare(("example_project",))
import example_project.cells
print(time.perf_counter() - start, "dagster" in sys.modules)
"""


def import_seconds(bare: bool) -> tuple[float, bool]:
    import statistics

    runs = []
    for _ in range(5):
        code = _IMPORT.format(root=str(ROOT), bare=bare)
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
        ).stdout.split()
        runs.append((float(out[0]), out[1] == "True"))
    return statistics.median(r[0] for r in runs), runs[0][1]


def run_static(tmp: Path) -> None:
    bench_grid(tmp / "warm", dependencies=True)  # warm-up
    print("(c) a 3-level sweep, 10 x 10 points over 3 chained cells (300 instances)\n")
    print("| variant | sbatch calls | submit s | ratio | wall s | ratio |")
    print("|---|---:|---:|---:|---:|---:|")
    base = bench_grid(tmp / "waves", dependencies=False)
    one = bench_grid(tmp / "one-pass", dependencies=True)
    print(row("one array per wave (baseline)", base, base))
    print(row("one pass, --dependency between arrays", one, base))
    print("\n(d) a task importing example_project's cells (fresh interpreter, median of 5)\n")
    print("| import | seconds | imports dagster | ratio |")
    print("|---|---:|---|---:|")
    before, dagster_before = import_seconds(bare=False)
    after, dagster_after = import_seconds(bare=True)
    print(f"| the package, then its cells (before) | {before:.2f} | {dagster_before} | 1.00x |")
    print(
        f"| the cells, package entered bare (a task now) | {after:.2f} | {dagster_after} | "
        f"{after / before:.2f}x |"
    )


def row(name: str, r: dict[str, Any], base: dict[str, Any]) -> str:
    def ratio(k: str) -> str:
        return f"{r[k] / base[k]:.2f}x" if base[k] else "-"

    return (
        f"| {name} | {r['sbatch']} | {r['submit_s']:.2f} | {ratio('submit_s')} | "
        f"{r['wall_s']:.1f} | {ratio('wall_s')} |"
    )


def run_steps(tmp: Path) -> None:
    import statistics

    import dagster as dg

    repeat = int(os.environ.get("FURTHER_BENCH_REPEAT", "3"))
    print("(e) Dagster: six independent cells and a join (7 steps, 7 instances)\n")
    found: dict[str, list[dict[str, Any]]] = {"multiprocess": [], "in_process": []}
    with dg.instance_for_test() as instance:
        os.environ["FURTHER_ROOT"] = str(tmp / "steps-warm")
        bench_dagster(tmp, True, instance, "in_process", "many_defs")  # warm-up
        for k in range(repeat):  # alternating, each on a fresh store
            for steps in ("multiprocess", "in_process"):
                os.environ["FURTHER_ROOT"] = str(tmp / f"steps-{steps}-{k}")
                found[steps].append(bench_dagster(tmp, True, instance, steps, "many_defs"))

    def median(steps: str) -> dict[str, Any]:
        runs = found[steps]
        return {f: statistics.median(r[f] for r in runs) for f in ("sbatch", "submit_s", "wall_s")}

    base, waves = median("multiprocess"), median("in_process")
    print(f"median of {repeat} alternating runs, each on a fresh store\n")
    print("| variant | sbatch calls | submit s | ratio | wall s | ratio |")
    print("|---|---:|---:|---:|---:|---:|")
    print(row("a Slurm job per step (`steps: multiprocess`, baseline)", base, base))
    print(row("one pass from the run (`steps: in_process`)", waves, base))
    for steps, runs in found.items():
        print(f"  {steps}: wall s " + ", ".join(f"{r['wall_s']:.1f}" for r in runs))


def main() -> None:
    started_cluster = cluster("status").returncode != 0
    if started_cluster:
        done = cluster("start")
        if done.returncode != 0:
            raise SystemExit(f"scripts/slurm-cluster start failed:\n{done.stdout}{done.stderr}")
    export_cluster_env()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-slurm-", dir="/tmp") as tmp:
            if "--static" in sys.argv[1:]:
                run_static(Path(tmp))
            elif "--steps" in sys.argv[1:]:
                run_steps(Path(tmp))
            else:
                run(Path(tmp))
    finally:
        if started_cluster:
            cluster("stop")


def run(tmp: Path) -> None:
    import dagster as dg

    os.environ["FURTHER_ROOT"] = str(tmp / "warm")
    n = int(os.environ.get("FURTHER_BENCH_SWEEP", "100"))
    print(f"Slurm: a {n}-point sweep of a trivial cell on the local single-node cluster\n")
    bench_engine(tmp / "warm", array=True)  # warm-up: imports, first submission
    print("(a) the engine (run_missing, mode SLURM)\n")
    print("| variant | sbatch calls | submit s | ratio | wall s | ratio |")
    print("|---|---:|---:|---:|---:|---:|")
    base = bench_engine(tmp / "engine-single", array=False)
    arr = bench_engine(tmp / "engine-array", array=True)
    print(row("one sbatch per instance (baseline)", base, base))
    print(row("one job array", arr, base))

    print("\n(b) Dagster: the sweep's partition range, Slurm step executor\n")
    print("| variant | sbatch calls | submit s | ratio | wall s | ratio |")
    print("|---|---:|---:|---:|---:|---:|")
    with dg.instance_for_test() as instance:
        os.environ["FURTHER_ROOT"] = str(tmp / "dagster-single")
        base = bench_dagster(tmp, array=False, instance=instance)
        print(row("one sbatch per instance (baseline)", base, base))
    with dg.instance_for_test() as instance:
        os.environ["FURTHER_ROOT"] = str(tmp / "dagster-array")
        arr = bench_dagster(tmp, array=True, instance=instance)
        print(row("one job array", arr, base))
    with dg.instance_for_test() as instance:
        os.environ["FURTHER_ROOT"] = str(tmp / "dagster-waves")
        waves = bench_dagster(tmp, array=True, instance=instance, steps="in_process")
        print(row("one job array, one pass from the run (`steps: in_process`)", waves, base))
        cached = bench_dagster(tmp, array=True, instance=instance, steps="in_process")
        print(row("cached re-run (same sweep)", cached, base))
        verdict = "met" if cached["sbatch"] == 0 and cached["wall_s"] < 10 else "MISSED"
        print(
            f"\ncached re-run: {cached['sbatch']} jobs submitted, {cached['steps']} steps "
            f"started, {cached['wall_s']:.2f}s (target: 0 jobs, < 10 s: {verdict})"
        )


if __name__ == "__main__":
    main()
