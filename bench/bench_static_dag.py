"""DASK_STATIC_DAG against DASK on a 1,000-instance static subtree.

    .venv/bin/python bench/bench_static_dag.py          # 10 chains x 100 (FURTHER_BENCH_*)

One local Dask cluster (2 worker processes, one thread each) serves both modes
(FURTHER_DASK_ADDRESS), so neither pays for starting it. Each round computes the whole subtree
into a fresh store root, DASK and DASK_STATIC_DAG alternating; the table shows the median
over the rounds, per instance, and the ratio against DASK measured in the same process. INLINE
(this process, one instance after another, no Dask) is the floor: what the store's work per
instance costs without any scheduling.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ROUNDS = int(os.environ.get("FURTHER_BENCH_ROUNDS", "3"))


def one(root: Path, mode: str) -> float:
    from bench.static_dag_cells import LAST, SWEEP
    from further_dagster import Session
    from further_dagster.engine import run_missing

    session = Session(root=root, progress=False)
    missing = session.plan(LAST, params=SWEEP).missing
    start = time.perf_counter()
    report = run_missing(session.store, missing, mode=mode, max_workers=2)
    wall = time.perf_counter() - start
    assert len(report.computed) == len(missing), report.summary()
    return wall


def main() -> None:
    import distributed

    from bench.static_dag_cells import DEPTH, WIDTH

    n = DEPTH * WIDTH
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        tempfile.TemporaryDirectory(prefix="bench-static-") as tmp,
    ):
        os.environ["FURTHER_DASK_ADDRESS"] = cluster.scheduler_address
        os.environ["FURTHER_STATIC_DAG_NODE_THRESH"] = "50"
        one(Path(tmp) / "warm", "DASK")  # imports, worker start-up
        walls: dict[str, list[float]] = {"DASK": [], "DASK_STATIC_DAG": [], "INLINE": []}
        for r in range(ROUNDS):
            for mode in walls:
                walls[mode].append(one(Path(tmp) / f"{mode}-{r}", mode))
    base = statistics.median(walls["DASK"])
    print(f"{WIDTH} chains x {DEPTH} = {n} instances, 2 Dask workers, median of {ROUNDS}\n")
    print("| mode | wall s | ms per instance | ratio |")
    print("|---|---:|---:|---:|")
    for mode, values in walls.items():
        wall = statistics.median(values)
        print(f"| {mode} | {wall:.2f} | {wall / n * 1000:.2f} | {wall / base:.2f}x |")


if __name__ == "__main__":
    main()
