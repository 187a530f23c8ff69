"""The SQL index (store/index/): what it costs per computed cell, and what it buys.

    .venv/bin/python bench/bench_index.py              # 100,000 instances for (b) and (c)
    .venv/bin/python bench/bench_index.py --n 10000    # a quicker run
    .venv/bin/python bench/bench_index.py --only-commit  # (a) only

(a) overhead per computed cell beyond make(), first Session.call of a chain of trivial cells,
    with the default SQLite index against the same with `index_url="none"` (no index), in the
    same process, alternating, median of the rounds; each round has a fresh root whose index
    was created before the call (creating it is a once-per-store cost, not a per-cell one).
    Target: <= 2 ms per computed cell in all.
(b) `session.query` / `session.instances` over N instances of one cell (synthetic instance
    directories, as a commit leaves them, indexed by a rebuild); baseline: the same question
    answered without an index, by reading every instance's provenance.json and
    manifest + contribution files.
(c) `further-dagster index rebuild` of those N instances; baseline: only reading the files the
    rebuild reads (no SQL).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.chain_project import chain  # noqa: E402
from further_dagster import Session  # noqa: E402
from further_dagster.store.index.rebuild import rebuild  # noqa: E402

MAKE_SECONDS = [0.0]


def _timed(original):  # type: ignore[no-untyped-def]
    def make(self):  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        try:
            return original(self)
        finally:
            MAKE_SECONDS[0] += time.perf_counter() - start

    return make


def computed_ms(n: int, root: Path, index_url: str | None, tag: str) -> float:
    project = chain(n, name=f"bench_ix_{tag}")
    for cell in project.cells.values():
        cell.make = _timed(cell.make)
    session = Session(root=root, progress=False, index_url=index_url)
    if index_url != "none":  # the index exists already, as in any store used before
        session.query("SELECT 1")
    MAKE_SECONDS[0] = 0.0
    start = time.perf_counter()
    session.call(f"{project.name}.c{n - 1:04d}")
    return (time.perf_counter() - start - MAKE_SECONDS[0]) / n * 1e3


def store_commit_ms(n: int, base: Path) -> tuple[float, float]:
    """Median `ArtifactStore.ensure` of a fresh key (two small contributions, a dependency),
    without and with the SQLite index, the two stores alternating commit by commit (so the
    machine's drift hits both alike)."""
    from further_dagster.store import ArtifactStore

    plain = ArtifactStore(base / "plain", index_url="none")
    indexed = ArtifactStore(base / "indexed")
    for store in (plain, indexed):  # engine, schema, imports: once per process
        store.ensure("b", "warm", "f" * 32, lambda tmp, log: {"x": 1}, {})
    times: dict[int, list[float]] = {id(plain): [], id(indexed): []}
    for i in range(n):
        pair = (plain, indexed) if i % 2 else (indexed, plain)
        for store in pair:
            start = time.perf_counter()
            store.ensure(
                "b",
                "c",
                f"{i:032x}",
                lambda tmp, log: {"score": 0.5, "tag": "t"},
                {"specs": {"alpha": 0.1, "i": i}, "deps": {"up": "f" * 32}},
            )
            times[id(store)].append(time.perf_counter() - start)
    return (
        statistics.median(times[id(plain)]) * 1e3,
        statistics.median(times[id(indexed)]) * 1e3,
    )


def bench_commit(cells: int, rounds: int, base: Path) -> tuple[float, float]:
    computed_ms(5, base / "warm-off", "none", "warm_off")  # once-per-process costs
    computed_ms(5, base / "warm-on", None, "warm_on")  # (sqlalchemy import, engine, schema)
    off, on = [], []
    for r in range(rounds):
        off.append(computed_ms(cells, base / f"off{r}", "none", f"off{r}"))
        on.append(computed_ms(cells, base / f"on{r}", None, f"on{r}"))
    return statistics.median(off), statistics.median(on)


_STATE = (
    '{{"status":"success","attempts":1,"failures":0,"created_at":"{t}","updated_at":"{t}",'
    '"started_at":"{t}","finished_at":"{t}","host":"bench","pid":1,"duration_s":0.01}}'
)


def synthetic_store(root: Path, n: int) -> None:
    """`n` instances of bench.fit (Specs alpha, seed; contributions score, weights) as files."""
    facts = {
        "python_version": "3.11",
        "platform": "Linux",
        "hostname": "bench",
        "user": "bench",
        "pid": 1,
        "argv": [],
        "executable": "python",
        "packages": {},
        "git": {"commit": "0" * 40, "branch": "main"},
        "slurm_job_id": None,
    }
    t = "2026-12-01T00:00:00Z"
    cell_dir = root / "bench" / "fit"
    cell_dir.mkdir(parents=True)
    for i in range(n):
        key = f"{i:032x}"
        result = cell_dir / key / "result"
        os.makedirs(result)
        alpha, seed, score = (i % 100) / 100, i // 100, (i * 7919 % 1000) / 1000
        (result / "score.json").write_text(json.dumps(score))
        (result / "weights.npy").write_bytes(b"\0" * 160)
        manifest = {
            "contributions": {
                "score": {"file": "score.json", "codec": "json", "size": len(json.dumps(score))},
                "weights": {"file": "weights.npy", "codec": "npy", "size": 160},
            }
        }
        (result / "manifest.json").write_text(json.dumps(manifest))
        provenance = {
            "project": "bench",
            "cell": "fit",
            "key": key,
            "path": f"bench/fit/{key}",
            "logic_version": "1",
            "api_version": "1",
            "specs": {"alpha": alpha, "seed": seed},
            "opts": {},
            "deps": {},
            "releases": {},
            "extra": {},
            "process": facts,
            "started_at": t,
            "finished_at": t,
            "duration_s": 0.01,
        }
        (result / "provenance.json").write_text(json.dumps(provenance))
        (cell_dir / key / "state.json").write_text(_STATE.format(t=t))


def scan_files(root: Path) -> tuple[int, float]:
    """Without an index: count and mean score of alpha < 0.5, reading the files."""
    count, total = 0, 0.0
    cell_dir = root / "bench" / "fit"
    for entry in os.scandir(cell_dir):
        result = os.path.join(entry.path, "result")
        with open(os.path.join(result, "provenance.json"), "rb") as fh:
            specs = json.loads(fh.read())["specs"]
        with open(os.path.join(result, "manifest.json"), "rb") as fh:
            json.loads(fh.read())
        with open(os.path.join(entry.path, "state.json"), "rb") as fh:
            json.loads(fh.read())
        if specs["alpha"] < 0.5:
            with open(os.path.join(result, "score.json"), "rb") as fh:
                total += json.loads(fh.read())
            count += 1
    return count, total / max(count, 1)


def timed(fn, repeats: int = 3):  # type: ignore[no-untyped-def]
    best, value = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        value = fn()
        best = min(best, time.perf_counter() - start)
    return best, value


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=100_000, help="instances for (b) and (c)")
    parser.add_argument("--cells", type=int, default=200, help="chain length for (a)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only-commit", action="store_true", help="(a) only, a minute")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        off, on = bench_commit(args.cells, args.rounds, base / "commit")
        print(f"(a) overhead per computed cell beyond make(), chain of {args.cells} cells\n")
        print("| index | ms per computed cell | ratio to no index |")
        print("|---|---:|---:|")
        print(f"| none (`index_url='none'`) | {off:.2f} | 1.00x |")
        print(f"| SQLite `<root>/.index.sqlite` (default) | {on:.2f} | {on / off:.2f}x |")
        print(f"\nindex cost per computed cell: {on - off:+.2f} ms\n")
        p, i = store_commit_ms(1000, base / "store")
        print("| `ArtifactStore.ensure` of a fresh key, interleaved | median ms | ratio |")
        print("|---|---:|---:|")
        print(f"| no index | {p:.3f} | 1.00x |")
        print(f"| SQLite index | {i:.3f} | {i / p:.2f}x |")
        print(f"\nindex cost per commit: {i - p:+.3f} ms\n")
        if args.only_commit:
            return

        root = base / "big"
        start = time.perf_counter()
        synthetic_store(root, args.n)
        made = time.perf_counter() - start
        scan_s, (count, mean) = timed(lambda: scan_files(root), repeats=1)
        session = Session(root=root, progress=False)
        url = str(session.store.index_url)
        rebuild_s, report = timed(lambda: rebuild(url, str(root)), repeats=1)
        assert report.instances == args.n, report
        sql = (
            "SELECT COUNT(*) AS n, AVG(score) AS mean FROM bench__fit "
            "WHERE status = 'success' AND alpha < 0.5"
        )
        query_s, frame = timed(lambda: session.query(sql))
        assert int(frame["n"][0]) == count and abs(float(frame["mean"][0]) - mean) < 1e-9
        rows_s, rows = timed(lambda: session.instances("bench.fit", where={"alpha": 0.25}))
        assert len(rows) == args.n // 100
        key_s, _ = timed(
            lambda: session.query(
                "SELECT * FROM instances WHERE key = :k", {"k": f"{args.n // 2:032x}"}
            )
        )
        print(f"(b), (c): {args.n:,} instances of one cell ({made:.0f} s to write them)\n")
        print("| what | seconds | baseline (read the files) s | ratio |")
        print("|---|---:|---:|---:|")
        print(
            f"| `session.query` COUNT/AVG over the view, alpha < 0.5 | {query_s:.3f} | "
            f"{scan_s:.2f} | {query_s / scan_s:.4f}x |"
        )
        print(
            f"| `session.instances('bench.fit', where={{'alpha': 0.25}})` | {rows_s:.3f} | "
            f"{scan_s:.2f} | {rows_s / scan_s:.4f}x |"
        )
        print(
            f"| `session.query` one instance by key | {key_s:.4f} | {scan_s:.2f} | "
            f"{key_s / scan_s:.5f}x |"
        )
        print(
            f"| `further-dagster index rebuild` | {rebuild_s:.1f} | {scan_s:.2f} | "
            f"{rebuild_s / scan_s:.2f}x |"
        )


if __name__ == "__main__":
    main()
