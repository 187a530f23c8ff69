"""The SQLite index under parallel commits of one process's threads (a LOCAL run).

What a user relies on: every result committed by parallel threads is indexed; a fresh store
never warns that it "already holds results" (its first commits race to create the index);
the commits of concurrent threads share transactions instead of queueing for SQLite's file
lock; and a failing shared write fails no commit and says so.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from further_dagster.store import ArtifactStore
from further_dagster.store.index import connection, sqlite_writes
from further_dagster.store.index.query import query_frame
from further_dagster.store.index.writer import forget_writers, writer_for

pytestmark = pytest.mark.unit

KEYS = [f"{i:032x}" for i in range(16)]


@pytest.fixture
def index_url(store_root: Path) -> Iterator[str]:
    url = f"sqlite:///{store_root / '.index.sqlite'}"
    yield url
    forget_writers()
    connection.dispose(url)


def _commit_together(store: ArtifactStore, keys: list[str]) -> None:
    """Ensure `keys` from one thread each, their computations released at once so that the
    commits coincide."""
    barrier = threading.Barrier(len(keys))
    errors: list[BaseException] = []

    def one(key: str) -> None:
        def compute(tmp: Path, log: logging.Logger) -> dict[str, int]:
            barrier.wait(timeout=30)
            return {"x": int(key, 16)}

        try:
            store.ensure("p", "c", key, compute, {})
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(k,)) for k in keys]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors


def test_parallel_first_commits_on_a_fresh_store_index_everything_without_warning(
    store_root: Path, index_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = ArtifactStore(store_root, index_url=index_url, poll_s=0.02)
    with caplog.at_level(logging.WARNING, logger="further"):
        _commit_together(store, KEYS)
    assert "already holds results" not in caplog.text
    assert caplog.text == ""
    keys = query_frame(index_url, "SELECT key FROM instances")["key"]
    assert sorted(keys) == KEYS


def test_a_store_that_held_results_before_its_index_still_says_to_rebuild(
    store_root: Path, index_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    ArtifactStore(store_root, index_url="none").ensure(
        "p", "c", "e" * 32, lambda t, g: {"x": 1}, {}
    )
    store = ArtifactStore(store_root, index_url=index_url, poll_s=0.02)
    with caplog.at_level(logging.WARNING, logger="further.store.index"):
        store.warm_index()  # what a run does first: the index is opened in the background
        _commit_together(store, KEYS[:4])
    assert caplog.text.count("already holds results") == 1
    assert "index rebuild --root" in caplog.text


def test_concurrent_commits_share_one_transaction(
    store_root: Path, index_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = ArtifactStore(store_root, index_url="none")
    for key in KEYS[:8]:
        plain.ensure("p", "c", key, lambda t, g: {"x": 1}, {})
    writer = writer_for(index_url, str(store_root))
    writer.refresh("p", "c", KEYS[0])  # opens the index
    writes = writer._sqlite
    assert writes is not None
    groups: list[list[str]] = []
    release = threading.Event()
    real_write = sqlite_writes.write

    def write(cursor, rows, *, replace, known_fields):  # type: ignore[no-untyped-def]
        groups.append([r.key for r in rows])
        if len(groups) == 1:
            assert release.wait(timeout=30)  # the first group holds the turn meanwhile
        real_write(cursor, rows, replace=replace, known_fields=known_fields)

    monkeypatch.setattr(sqlite_writes, "write", write)
    threads = [
        threading.Thread(target=writer.refresh, args=("p", "c", k), kwargs={"fresh": True})
        for k in KEYS[1:8]
    ]
    threads[0].start()
    deadline = time.monotonic() + 30
    while not groups and time.monotonic() < deadline:
        time.sleep(0.005)
    for t in threads[1:]:
        t.start()
    while len(writes._queued) < 6 and time.monotonic() < deadline:
        time.sleep(0.005)
    release.set()
    for t in threads:
        t.join(timeout=60)
    assert groups == [[KEYS[1]], sorted(KEYS[2:8], key=groups[1].index)]
    assert sorted(query_frame(index_url, "SELECT key FROM instances")["key"]) == KEYS[:8]


def test_a_failing_shared_write_warns_and_fails_no_commit(
    store_root: Path,
    index_url: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = ArtifactStore(store_root, index_url=index_url, poll_s=0.02)
    store.ensure("p", "c", "e" * 32, lambda t, g: {"x": 1}, {})  # opens the index

    def broken(cursor, rows, *, replace, known_fields):  # type: ignore[no-untyped-def]
        raise OSError("disk on fire")

    monkeypatch.setattr(sqlite_writes, "write", broken)
    with caplog.at_level(logging.WARNING, logger="further.store.index"):
        _commit_together(store, KEYS[:6])
    assert all(store.is_stored("p", "c", k) for k in KEYS[:6])
    warned = [r for r in caplog.records if "could not be written" in r.getMessage()]
    assert warned and "disk on fire" in warned[0].getMessage()
    assert "index rebuild --root" in warned[0].getMessage()
