"""Pre-memoization of a resource cell over a 100 MB data file, against reading the file.

    .venv/bin/python bench/bench_release.py            # 100 MB
    .venv/bin/python bench/bench_release.py --mb 500

A resource cell whose get_release() is one stat of the file (mtime + size) and whose make()
reads all of it. After one computation, a Session.call with the release unchanged runs
get_release() and finds the result stored: make() is not called and the data file is never
opened, which this script proves by counting make() calls and every `open` of the data file
(a `sys.addaudithook` on the interpreter's "open" event).

Rows, each the median of repeated runs in this process. Baselines:
  read, page cache   read the whole file while it is cached in memory (the fastest reading)
  read, disk         the same after evicting the file's pages (posix_fadvise DONTNEED)
  first call         Session.call that computes: get_release + make() reads the file + commit
Pre-memoized paths (release unchanged, result stored):
  plan (decision)    get_release (one stat) + recording the observation + one stat of the result
  cached call        Session.call: the decision + loading the small stored result
Target: >= 100x faster than reading the file, and zero reads of it.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from further_dagster import Project, ResourceCell, Session, Specs, file_release  # noqa: E402

OPENS: list[str] = []
MAKES = [0]
DATA_PATH: list[str] = [""]


def _audit(event: str, args: tuple) -> None:  # type: ignore[type-arg]
    if event == "open" and DATA_PATH[0] and str(args[0]) == DATA_PATH[0]:
        OPENS.append(event)


bench_release = Project("bench_release")


class BigFile(ResourceCell, project=bench_release):
    """A large data file: released by one stat, read whole by make()."""

    class Specs(Specs):
        path: str

    contributions = {"summary": dict}

    @classmethod
    def get_release(cls, specs):  # type: ignore[no-untyped-def]
        return file_release(specs.path)

    def make(self):  # type: ignore[no-untyped-def]
        MAKES[0] += 1
        h = hashlib.blake2b(digest_size=16)
        size = 0
        with open(self.specs.path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                h.update(chunk)
                size += len(chunk)
        return {"summary": {"bytes": size, "blake2b": h.hexdigest()}}


def _write(path: Path, mb: int) -> None:
    block = os.urandom(1 << 20)
    with open(path, "wb") as fh:
        for _ in range(mb):
            fh.write(block)


def _read(path: Path) -> int:
    size = 0
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            size += len(chunk)
    return size


def _evict(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def _median(
    fn: Callable[[], object], repeat: int, before: Callable[[], object] | None = None
) -> float:
    times = []
    for _ in range(repeat):
        if before is not None:
            before()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=int, default=100, help="size of the data file in MB")
    parser.add_argument("--repeat", type=int, default=200, help="cached calls to time")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench_release_") as tmp:
        data = Path(tmp) / "big.bin"
        _write(data, args.mb)
        DATA_PATH[0] = str(data)
        sys.addaudithook(_audit)
        session = Session(root=Path(tmp) / "store", progress=False)
        cell = "bench_release.big_file"

        read_warm = _median(lambda: _read(data), 5)
        read_cold = _median(lambda: _read(data), 3, before=lambda: _evict(data))

        OPENS.clear()
        start = time.perf_counter()
        first = session.call(cell, path=str(data))
        assert not isinstance(first, list)
        first_call = time.perf_counter() - start
        assert MAKES[0] == 1 and first["summary"]["bytes"] == args.mb << 20
        opens_first = len(OPENS)

        OPENS.clear()
        session.call(cell, path=str(data))  # warm-up of the cached path
        plan = _median(lambda: session.plan(cell, path=str(data)), args.repeat)
        cached = _median(lambda: session.call(cell, path=str(data)), args.repeat)
        assert session.plan(cell, path=str(data)).missing == []
        makes_cached, opens_cached = MAKES[0] - 1, len(OPENS)
        calls = 2 * args.repeat + 2

    baselines = [
        ("read, page cache", read_warm),
        ("read, disk", read_cold),
        ("first call", first_call),
    ]
    print(
        f"\nResource cell over a {args.mb} MB file; medians; ratio = baseline / pre-memoized path"
    )
    header = "| path                           |       ms |" + "".join(
        f" x {name:<16} |" for name, _ in baselines
    )
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for name, seconds in baselines:
        print(f"| baseline: {name:<20} | {seconds * 1e3:8.3f} |" + f" {'-':>18} |" * len(baselines))
    for name, seconds in (
        ("pre-memoized: plan (decision)", plan),
        ("pre-memoized: cached call", cached),
    ):
        ratios = "".join(f" {base / seconds:17.0f}x |" for _, base in baselines)
        print(f"| {name:<30} | {seconds * 1e3:8.3f} |{ratios}")
    print(
        f"\nfirst call: make() x1, data file opened {opens_first}x. {calls} pre-memoized "
        f"plans/calls: make() x{makes_cached}, data file opened {opens_cached}x."
    )
    for name, seconds in (("plan (decision)", plan), ("cached call", cached)):
        for base_name, base in baselines[:2]:
            verdict = "met" if base / seconds >= 100 else "NOT met"
            print(f"target >= 100x: {name} vs {base_name}: {base / seconds:.0f}x, {verdict}")
    if makes_cached or opens_cached:
        raise SystemExit("the cached path read the data file")


if __name__ == "__main__":
    main()
