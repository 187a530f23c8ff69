"""What integrity costs: digest verification per MB on load, and per computed cell.

    .venv/bin/python bench/bench_integrity.py            # a few seconds, store in /dev/shm
    .venv/bin/python bench/bench_integrity.py --mb 256   # a bigger array for (a)
    .venv/bin/python bench/bench_integrity.py --dir .    # on the disk (file creation costs
                                                         # dominate and vary with its load)

(a) loading one stored float64 array of `--mb` MB (page-cached), per MB: `verify="digest"`
    (size and blake2b of every byte, the default) against `verify="size"` and against no
    verification at all (`np.load` of the same file: the decode alone). Ratios in the same
    process.
(b) the integrity work of one computed cell with a small result, measured directly: writing
    its contribution with size and digest against writing it without (the manifest entry of
    before this change), plus loading its one small input with every check against loading a
    legacy entry (presence only). Target: <= 2 ms per computed cell; it is a few us.
(c) the whole overhead per computed cell of a chain of trivial cells (one small JSON
    contribution each, and one input loaded): a first `Session.call` minus the time in make(),
    with this change's integrity against the same run with digests neither written nor checked
    (best of `--rounds`, interleaved). On a busy machine the difference is within the noise of
    (c); (b) is the figure to compare with the target.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.chain_project import chain  # noqa: E402
from further_dagster import Session  # noqa: E402
from further_dagster.store import ArtifactStore, codecs  # noqa: E402
from further_dagster.store.records import ManifestEntry  # noqa: E402

KEY = "0123456789abcdef0123456789abcdef"


def best_of(fn: Callable[[], Any], repeats: int) -> float:
    """The fastest of `repeats` timed calls (seconds): the least noisy estimate of the cost."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def bench_load(root: Path, mb: int) -> dict[str, float]:
    array = np.random.default_rng(0).random(mb * (1 << 20) // 8)
    store = ArtifactStore(root)
    store.ensure("bench", "big", KEY, lambda tmp, log: {"array": array}, {})
    path = store.instance_dir("bench", "big", KEY) / "result" / "array.npy"
    size_only = ArtifactStore(root, verify="size")
    repeats = 7
    np.load(path)  # into the page cache
    none = best_of(lambda: np.load(path, allow_pickle=False), repeats)
    size = best_of(lambda: size_only.load("bench", "big", KEY), repeats)
    digest = best_of(lambda: store.load("bench", "big", KEY), repeats)
    per_mb = 1e3 / mb
    return {"none": none * per_mb, "size": size * per_mb, "digest": digest * per_mb}


def _legacy_entry(codec: codecs.Codec, value: Any, path: Path) -> ManifestEntry:
    codec.encode(value, path)
    return ManifestEntry(file=path.name, codec=codec.name)


@contextmanager
def without_digests() -> Iterator[None]:
    """Write manifests as before this change (file and codec only): no hashing on write, and
    nothing but presence to check on load."""
    original = codecs._write_entry
    codecs._write_entry = _legacy_entry
    try:
        yield
    finally:
        codecs._write_entry = original


MAKE_SECONDS = [0.0]


def _timed(original: Callable[..., Any]) -> Callable[..., Any]:
    def make(self: Any) -> Any:
        start = time.perf_counter()
        try:
            return original(self)
        finally:
            MAKE_SECONDS[0] += time.perf_counter() - start

    return make


def bench_cells(root: Path, n: int, label: str) -> float:
    """Overhead per computed cell (ms) of a first Session.call of an n-cell chain."""
    project = chain(n, name=f"bench_integrity_{label}")
    for cell in project.cells.values():
        cell.make = _timed(cell.make)  # type: ignore[method-assign]
    session = Session(root=root / label, progress=False)
    MAKE_SECONDS[0] = 0.0
    start = time.perf_counter()
    session.call(f"{project.name}.c{n - 1:04d}")
    return (time.perf_counter() - start - MAKE_SECONDS[0]) / n * 1e3


def bench_small(root: Path) -> dict[str, float]:
    """Microseconds: encoding one small contribution with and without its digest, and loading
    one small input with every check and as a legacy entry."""
    n = 200
    dirs = iter(range(10**9))

    def per_call(fn: Callable[[], Any]) -> float:
        return best_of(lambda: [fn() for _ in range(n)], 5) / n * 1e6

    def write_new() -> float:
        """Encode into fresh files, as an attempt does (overwriting one file would measure
        ext4's flush-on-truncate instead), in a fresh directory per batch."""

        def batch() -> None:
            tmp = root / f"tmp{next(dirs)}"
            tmp.mkdir(parents=True)
            for i in range(n):
                codecs.encode_value(f"v{i}", 12345, tmp)

        return best_of(batch, 9) / n * 1e6

    write_digest, write_legacy = [], []
    for _ in range(3):  # alternating, best of all
        write_digest.append(write_new())
        with without_digests():
            write_legacy.append(write_new())
    store = ArtifactStore(root / "new")
    store.ensure("p", "c", KEY, lambda t, log: {"value": 12345}, {})
    legacy = ArtifactStore(root / "old")
    with without_digests():
        legacy.ensure("p", "c", KEY, lambda t, log: {"value": 12345}, {})
    load_digest = per_call(lambda: store.load("p", "c", KEY))
    load_legacy = per_call(lambda: legacy.load("p", "c", KEY))
    return {
        "write_digest": min(write_digest),
        "write_legacy": min(write_legacy),
        "load_digest": load_digest,
        "load_legacy": load_legacy,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=64, help="array size for (a)")
    parser.add_argument("--cells", type=int, default=200, help="chain length for (b)")
    parser.add_argument("--rounds", type=int, default=5, help="chains per variant for (c)")
    parser.add_argument(
        "--dir",
        default="/dev/shm" if Path("/dev/shm").is_dir() else None,
        help="where the temporary stores go (default /dev/shm: a tmpfs, so the figures are the "
        "CPU cost of the store and not the disk's metadata latency)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        root = Path(tmp)
        load = bench_load(root / "load", args.mb)
        print(f"(a) loading a {args.mb} MB float64 array (page-cached), ms per MB\n")
        print("| verification | ms/MB | MB/s | ratio to none | ratio to size |")
        print("|---|---:|---:|---:|---:|")
        for name, text in (
            ("none", "none (np.load of the file)"),
            ("size", 'verify="size"'),
            ("digest", 'verify="digest" (default)'),
        ):
            ms = load[name]
            print(
                f"| {text} | {ms:.3f} | {1e3 / ms:.0f} | {ms / load['none']:.2f}x | "
                f"{ms / load['size']:.2f}x |"
            )

        small = bench_small(root / "small")
        w = small["write_digest"] - small["write_legacy"]
        r = small["load_digest"] - small["load_legacy"]
        print("\n(b) integrity work of one computed cell with a small result, us\n")
        print("| step | before (file + codec) | now (+ size, blake2b, checks) | cost |")
        print("|---|---:|---:|---:|")
        print(
            f"| write its contribution | {small['write_legacy']:.1f} | "
            f"{small['write_digest']:.1f} | {w:+.1f} |"
        )
        print(
            f"| load its input | {small['load_legacy']:.1f} | {small['load_digest']:.1f} | "
            f"{r:+.1f} |"
        )
        print(f"| per computed cell | | | {w + r:+.1f} us = {(w + r) / 1e3:.3f} ms |")

        bench_cells(root / "warm", 5, "warmup")  # once-per-process costs are paid here
        with_digest, legacy = [], []
        for i in range(args.rounds):  # interleaved, alternating who goes first
            for variant in ("legacy", "digest") if i % 2 else ("digest", "legacy"):
                if variant == "legacy":
                    with without_digests():
                        legacy.append(bench_cells(root / f"r{i}", args.cells, f"legacy{i}"))
                else:
                    with_digest.append(bench_cells(root / f"r{i}", args.cells, f"digest{i}"))
        a, b = min(with_digest), min(legacy)
        print(
            f"\n(c) overhead per computed cell beyond make(), chain of {args.cells} trivial "
            f"cells, best of {args.rounds}\n"
        )
        print("| manifests | ms per computed cell |")
        print("|---|---:|")
        print(f"| file + codec only (before this change) | {b:.3f} |")
        print(f"| + size + blake2b, verified on load (now) | {a:.3f} |")
        print(f"| integrity cost per computed cell | {a - b:+.3f} ({a / b:.2f}x) |")


if __name__ == "__main__":
    main()
