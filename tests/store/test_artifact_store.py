"""ArtifactStore.ensure/load in one process: hits, failures and retries, logs, provenance."""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from further_dagster.errors import (
    CellComputeError,
    CodecError,
    ConfigurationError,
    ContributionError,
    CorruptArtifactError,
    InvalidNameError,
    LockTimeout,
    StoreError,
)
from further_dagster.store import ArtifactStore, Outcome, State
from further_dagster.store.lease import Lease
from further_dagster.store.records import utcnow, write_record

from .conftest import KEY, KEY2

pytestmark = pytest.mark.unit

PROV: dict[str, Any] = {
    "logic_version": 3,
    "specs": {"lr": 0.5, "n": 2},
    "deps": {"data": KEY2},
    "releases": {"raw": "2024-05"},
}


class Counter:
    """A compute function that counts its calls and returns fixed contributions."""

    def __init__(self, values: Mapping[str, Any] | None = None) -> None:
        self.calls = 0
        self.dirs: list[Path] = []
        self.values = dict(values or {"answer": 42, "arr": np.arange(3)})

    def __call__(self, tmp_dir: Path, logger: logging.Logger) -> Mapping[str, Any]:
        self.calls += 1
        self.dirs.append(tmp_dir)
        return self.values


def failing(message: str = "boom") -> Callable[[Path, logging.Logger], Mapping[str, Any]]:
    def compute(tmp_dir: Path, logger: logging.Logger) -> Mapping[str, Any]:
        (tmp_dir / "partial.bin").write_bytes(b"half")
        raise ValueError(message)

    return compute


def test_miss_then_hit(store: ArtifactStore) -> None:
    compute = Counter()
    assert not store.is_stored("p", "c", KEY)
    first = store.ensure("p", "c", KEY, compute, PROV)
    inst = store.root / "p" / "c" / KEY
    assert first.hit is False and first.waited is False
    assert first.key == KEY and first.path == inst == store.instance_dir("p", "c", KEY)
    assert first.attempts == 1 and first.duration_s > 0
    assert store.is_stored("p", "c", KEY)

    second = store.ensure("p", "c", KEY, compute, PROV)
    assert second == Outcome(hit=True, waited=False, key=KEY, path=inst, duration_s=0.0, attempts=0)
    assert compute.calls == 1

    loaded = store.load("p", "c", KEY)
    assert loaded["answer"] == 42 and np.array_equal(loaded["arr"], np.arange(3))
    assert list(store.load("p", "c", KEY, names=["answer"])) == ["answer"]
    assert sorted(p.name for p in inst.iterdir()) == [
        "cell.log",
        "lock.guard",
        "result",
        "state.json",
    ]  # lock released, no temporary left
    assert sorted(p.name for p in (inst / "result").iterdir()) == [
        "answer.json",
        "arr.npy",
        "manifest.json",
        "provenance.json",
    ]
    manifest = store.read_manifest("p", "c", KEY)
    assert manifest.contributions["arr"].codec == "npy"


def test_compute_writes_into_a_temporary_dir_that_becomes_result(store: ArtifactStore) -> None:
    def compute(tmp_dir: Path, logger: logging.Logger) -> Mapping[str, Any]:
        assert tmp_dir.name.startswith("result.tmp-")
        assert not (tmp_dir.parent / "result").exists()
        (tmp_dir / "extra.txt").write_text("side file")
        return {"x": 1}

    store.ensure("p", "c", KEY, compute, {})
    assert (store.instance_dir("p", "c", KEY) / "result" / "extra.txt").read_text() == "side file"


def test_success_state(store: ArtifactStore) -> None:
    assert store.read_state("p", "c", KEY) is None
    store.ensure("p", "c", KEY, Counter(), PROV)
    state = store.read_state("p", "c", KEY)
    assert isinstance(state, State)
    assert state.status == "success" and state.attempts == 1 and state.error is None
    assert state.pid == os.getpid()
    assert state.duration_s is not None and state.duration_s > 0
    assert state.started_at is not None and state.finished_at is not None
    assert state.created_at <= state.started_at <= state.finished_at == state.updated_at


def test_provenance_contents(store: ArtifactStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLURM_JOB_ID", "777")
    extra = {"opts": {"verbose": True}, "api_version": "2", "project": "p", "cell": "c"}
    store.ensure("p", "c", KEY, Counter(), {**PROV, **extra, "key": KEY})
    prov = store.read_provenance("p", "c", KEY)
    assert (prov.project, prov.cell, prov.key) == ("p", "c", KEY)
    assert prov.path == f"p/c/{KEY}"  # relative to the root
    assert prov.logic_version == 3 and prov.api_version == "2"
    assert prov.specs == {"lr": 0.5, "n": 2} and prov.opts == {"verbose": True}
    assert prov.deps == {"data": KEY2} and prov.releases == {"raw": "2024-05"}
    assert prov.process.pid == os.getpid()
    assert prov.process.slurm_job_id == "777"
    assert {"pydantic", "numpy"} <= set(prov.process.packages)
    assert prov.finished_at is not None and prov.started_at <= prov.finished_at
    assert prov.duration_s is not None and prov.duration_s >= 0
    text = (store.instance_dir("p", "c", KEY) / "result" / "provenance.json").read_text()
    assert str(store.root) not in text  # no absolute store paths inside records


@pytest.mark.parametrize(
    "provenance,match",
    [
        ({"logic": 1}, "unknown provenance field"),
        ({"specs": {"t": (1, 2)}}, "JSON-able"),
        ({"deps": {"d": "nope"}}, "logic key"),
        ({"project": "other"}, "disagrees"),
        ({"key": KEY2}, "disagrees"),
    ],
)
def test_bad_provenance_fails_before_compute(
    store: ArtifactStore, provenance: dict[str, Any], match: str
) -> None:
    compute = Counter()
    with pytest.raises(StoreError, match=match):
        store.ensure("p", "c", KEY, compute, provenance)
    assert compute.calls == 0
    assert not store.instance_dir("p", "c", KEY).exists()


def test_failure_is_recorded_with_traceback(store: ArtifactStore) -> None:
    with pytest.raises(CellComputeError) as info:
        store.ensure("p", "c", KEY, failing("boom 1"), PROV)
    err = info.value
    inst = store.instance_dir("p", "c", KEY)
    assert err.cell == "p.c" and err.key == KEY
    assert err.state_path == str(inst / "state.json")
    assert isinstance(err.__cause__, ValueError)
    assert "ValueError: boom 1" in err.remote_traceback
    assert "in compute" in err.remote_traceback  # the frame that raised
    assert "attempt 1/3" in str(err) and "2 attempt(s) left" in str(err)

    state = store.read_state("p", "c", KEY)
    assert state is not None and state.status == "failed" and state.attempts == 1
    assert state.error is not None
    assert state.error.type == "builtins.ValueError" and state.error.message == "boom 1"
    assert state.error.traceback == err.remote_traceback
    assert not store.is_stored("p", "c", KEY)
    assert sorted(p.name for p in inst.iterdir()) == ["cell.log", "lock.guard", "state.json"]
    log_text = (inst / "cell.log").read_text()
    assert "attempt 1 of p.c@01234567 failed" in log_text
    assert "ValueError: boom 1" in log_text


def test_failures_are_retried_up_to_max_attempts(make_store: Callable[..., ArtifactStore]) -> None:
    store = make_store(max_attempts=2)
    calls = []

    def compute(tmp_dir: Path, logger: logging.Logger) -> Mapping[str, Any]:
        calls.append(1)
        raise RuntimeError(f"failure {len(calls)}")

    for n in (1, 2):
        with pytest.raises(CellComputeError, match=f"failure {n}"):
            store.ensure("p", "c", KEY, compute, {})
    state = store.read_state("p", "c", KEY)
    assert state is not None and state.attempts == 2
    with pytest.raises(CellComputeError, match="reaching max_attempts=2") as info:
        store.ensure("p", "c", KEY, compute, {})
    assert len(calls) == 2  # not run a third time
    message = str(info.value)
    assert "bump the cell's logic_version" in message
    assert str(store.instance_dir("p", "c", KEY) / "state.json") in message
    assert "RuntimeError: failure 2" in info.value.remote_traceback
    assert not (store.instance_dir("p", "c", KEY) / "lock").exists()

    (store.instance_dir("p", "c", KEY) / "state.json").unlink()  # the documented fix
    outcome = store.ensure("p", "c", KEY, Counter({"v": 1}), {})
    assert outcome.attempts == 1 and store.load("p", "c", KEY) == {"v": 1}


def test_failed_then_succeeded_counts_attempts(store: ArtifactStore) -> None:
    with pytest.raises(CellComputeError):
        store.ensure("p", "c", KEY, failing(), {})
    outcome = store.ensure("p", "c", KEY, Counter({"v": 2}), {})
    assert outcome.hit is False and outcome.attempts == 2
    state = store.read_state("p", "c", KEY)
    assert state is not None and state.status == "success" and state.attempts == 2


def test_max_attempts_from_environment(
    make_store: Callable[..., ArtifactStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FURTHER_MAX_ATTEMPTS", "1")
    store = make_store()
    assert store.max_attempts == 1
    with pytest.raises(CellComputeError, match="it will not be retried"):
        store.ensure("p", "c", KEY, failing(), {})
    with pytest.raises(CellComputeError, match="reaching max_attempts=1"):
        store.ensure("p", "c", KEY, Counter(), {})


def test_log_is_captured_into_cell_log(store: ArtifactStore) -> None:
    root_handlers = list(logging.getLogger().handlers)
    noise_go, noise_done = threading.Event(), threading.Event()

    def noise() -> None:
        noise_go.wait()
        logging.getLogger("thirdparty").warning("other thread, not ours")
        noise_done.set()

    threading.Thread(target=noise).start()

    def compute(tmp_dir: Path, logger: logging.Logger) -> Mapping[str, Any]:
        assert logger.name == "further.cell.p.c"
        logger.info("progress via cell logger")
        logging.getLogger("thirdparty").warning("library warning on the same thread")
        logging.getLogger("thirdparty").debug("below the library's level: dropped")
        worker = threading.Thread(target=lambda: logger.info("cell logger from a worker"))
        worker.start()
        worker.join()
        noise_go.set()
        noise_done.wait()
        return {"x": 1}

    store.ensure("p", "c", KEY, compute, {})
    text = (store.instance_dir("p", "c", KEY) / "cell.log").read_text()
    assert "INFO further.cell.p.c [MainThread]: progress via cell logger" in text
    assert "WARNING thirdparty [MainThread]: library warning on the same thread" in text
    assert "cell logger from a worker" in text
    assert "other thread, not ours" not in text
    assert "dropped" not in text
    assert text.count("progress via cell logger") == 1  # not written twice via the root
    assert "attempt 1 of p.c@01234567 started" in text and "stored in" in text
    assert logging.getLogger().handlers == root_handlers  # handlers removed afterwards
    # later records from the same thread no longer go to the file
    logging.getLogger("thirdparty").warning("after ensure")
    assert "after ensure" not in (store.instance_dir("p", "c", KEY) / "cell.log").read_text()


def test_concurrent_keys_of_one_cell_keep_separate_logs(store: ArtifactStore) -> None:
    barrier = threading.Barrier(2)

    def compute_for(tag: str) -> Callable[[Path, logging.Logger], Mapping[str, Any]]:
        def compute(tmp_dir: Path, logger: logging.Logger) -> Mapping[str, Any]:
            barrier.wait()
            logger.info("from %s", tag)
            logging.getLogger("lib").warning("lib from %s", tag)
            barrier.wait()
            return {"tag": tag}

        return compute

    threads = [
        threading.Thread(target=store.ensure, args=("p", "c", k, compute_for(k[:4]), {}))
        for k in (KEY, KEY2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for key, other in ((KEY, KEY2), (KEY2, KEY)):
        text = (store.instance_dir("p", "c", key) / "cell.log").read_text()
        assert f"from {key[:4]}" in text and f"lib from {key[:4]}" in text
        assert f"from {other[:4]}" not in text


def test_stale_temporaries_are_removed_when_an_attempt_starts(store: ArtifactStore) -> None:
    inst = store.instance_dir("p", "c", KEY)
    stale = inst / "result.tmp-deadbeef"
    (stale / "sub").mkdir(parents=True)
    (stale / "sub" / "half.npy").write_bytes(b"x")
    (inst / ".state.json.tmp-0123").write_text("{")
    store.ensure("p", "c", KEY, Counter(), {})
    assert not stale.exists()
    assert not (inst / ".state.json.tmp-0123").exists()


def test_crashed_previous_attempt_is_counted_and_redone(
    store: ArtifactStore, caplog: pytest.LogCaptureFixture
) -> None:
    inst = store.instance_dir("p", "c", KEY)
    inst.mkdir(parents=True)
    now = utcnow()
    write_record(
        inst / "state.json",
        State(
            status="running",
            attempts=1,
            created_at=now,
            updated_at=now,
            started_at=now,
            host="gone-host",
            pid=31337,
        ),
    )
    with caplog.at_level(logging.WARNING, logger="further.store"):
        outcome = store.ensure("p", "c", KEY, Counter(), {})
    assert outcome.attempts == 2
    assert "did not finish" in caplog.text and "pid 31337 on gone-host" in caplog.text
    state = store.read_state("p", "c", KEY)
    assert state is not None and state.created_at == now


@pytest.mark.parametrize(
    "returned,error",
    [
        ([("x", 1)], ContributionError),
        ({"bad-name": 1}, InvalidNameError),
        ({"manifest": 1}, InvalidNameError),
        ({"fn": lambda: 1}, CodecError),
    ],
)
def test_bad_contributions_fail_the_attempt(
    store: ArtifactStore, returned: Any, error: type[Exception]
) -> None:
    with pytest.raises(error):
        store.ensure("p", "c", KEY, lambda d, lg: returned, {})
    state = store.read_state("p", "c", KEY)
    assert state is not None and state.status == "failed" and state.error is not None
    inst = store.instance_dir("p", "c", KEY)
    assert sorted(p.name for p in inst.iterdir()) == ["cell.log", "lock.guard", "state.json"]


def test_keyboard_interrupt_is_recorded_and_reraised(store: ArtifactStore) -> None:
    def compute(tmp_dir: Path, logger: logging.Logger) -> Mapping[str, Any]:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        store.ensure("p", "c", KEY, compute, {})
    state = store.read_state("p", "c", KEY)
    assert state is not None and state.status == "interrupted"  # issue #8: was "failed"
    assert state.error is not None and state.error.type == "builtins.KeyboardInterrupt"
    assert not (store.instance_dir("p", "c", KEY) / "lock").exists()


def test_compute_asking_for_its_own_key_is_refused(store: ArtifactStore) -> None:
    def compute(tmp_dir: Path, logger: logging.Logger) -> Mapping[str, Any]:
        store.ensure("p", "c", KEY, compute, {})
        return {}

    with pytest.raises(CellComputeError) as info:
        store.ensure("p", "c", KEY, compute, {})
    assert isinstance(info.value.__cause__, StoreError)
    assert "dependency cycle" in str(info.value.__cause__)


def test_nested_ensure_of_another_key_works(store: ArtifactStore) -> None:
    def outer(tmp_dir: Path, logger: logging.Logger) -> Mapping[str, Any]:
        store.ensure("p", "dep", KEY2, lambda d, lg: {"v": 1}, {})
        return {"v": store.load("p", "dep", KEY2)["v"] + 1}

    store.ensure("p", "c", KEY, outer, {})
    assert store.load("p", "c", KEY) == {"v": 2}


def test_load_errors(store: ArtifactStore) -> None:
    with pytest.raises(StoreError, match="not stored"):
        store.load("p", "c", KEY)
    with pytest.raises(StoreError, match="not stored"):
        store.read_provenance("p", "c", KEY)
    store.ensure("p", "c", KEY, Counter({"a": 1, "b": [1.5]}), {})
    with pytest.raises(CorruptArtifactError, match="'zzz'"):
        store.load("p", "c", KEY, names=["a", "zzz"])
    result = store.instance_dir("p", "c", KEY) / "result"
    (result / "b.json").write_text("[1.5")
    with pytest.raises(CorruptArtifactError, match="b.json"):
        store.load("p", "c", KEY)
    assert store.load("p", "c", KEY, names=["a"]) == {"a": 1}
    (result / "b.json").unlink()
    with pytest.raises(CorruptArtifactError, match="missing"):
        store.load("p", "c", KEY)
    (result / "manifest.json").unlink()
    with pytest.raises(CorruptArtifactError, match="manifest.json"):
        store.load("p", "c", KEY)
    json.loads((result / "provenance.json").read_text())
    (result / "provenance.json").unlink()
    with pytest.raises(CorruptArtifactError, match="provenance.json"):
        store.read_provenance("p", "c", KEY)


def test_waiter_in_another_thread_gets_a_hit(
    store: ArtifactStore, caplog: pytest.LogCaptureFixture
) -> None:
    started, release = threading.Event(), threading.Event()
    outcomes: list[Outcome] = []

    def slow(tmp_dir: Path, logger: logging.Logger) -> Mapping[str, Any]:
        started.set()
        release.wait(5)
        return {"v": "slow"}

    holder = threading.Thread(target=lambda: outcomes.append(store.ensure("p", "c", KEY, slow, {})))
    holder.start()
    assert started.wait(5)
    waiter_compute = Counter()
    timer = threading.Timer(0.3, release.set)
    timer.start()
    with caplog.at_level(logging.INFO, logger="further.store"):
        waited = store.ensure("p", "c", KEY, waiter_compute, {})
    holder.join()
    assert waited.hit is True and waited.waited is True and waiter_compute.calls == 0
    assert outcomes[0].hit is False
    assert f"waiting for p.c@{KEY[:8]} held by pid {os.getpid()}" in caplog.text
    assert store.load("p", "c", KEY) == {"v": "slow"}


def test_many_threads_compute_once(store: ArtifactStore) -> None:
    calls: list[int] = []
    lock = threading.Lock()
    barrier = threading.Barrier(8)
    outcomes: list[Outcome] = []

    def compute(tmp_dir: Path, logger: logging.Logger) -> Mapping[str, Any]:
        with lock:
            calls.append(1)
        return {"v": 1}

    def run() -> None:
        barrier.wait()
        outcomes.append(store.ensure("p", "c", KEY, compute, {}))

    threads = [threading.Thread(target=run) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert sorted(o.hit for o in outcomes) == [False] + [True] * 7


def test_lock_timeout_names_key_holder_and_fix(make_store: Callable[..., ArtifactStore]) -> None:
    store = make_store(wait_timeout_s=0.2)
    inst = store.instance_dir("p", "c", KEY)
    inst.mkdir(parents=True)
    compute = Counter()
    with Lease(inst, lease_s=5):
        with pytest.raises(LockTimeout) as info:
            store.ensure("p", "c", KEY, compute, {})
    message = str(info.value)
    assert f"p.c@{KEY}" in message
    assert f"pid {os.getpid()}" in message
    assert "FURTHER_WAIT_TIMEOUT_SECS" in message and str(inst / "lock") in message
    assert compute.calls == 0


def test_store_settings_validation(
    make_store: Callable[..., ArtifactStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FURTHER_WAIT_TIMEOUT_SECS", "12")
    monkeypatch.setenv("FURTHER_LEASE_SECS", "9")
    store = make_store()
    assert (store.wait_timeout_s, store.lease_s, store.max_attempts) == (12, 9, 3)
    with pytest.raises(ConfigurationError, match="lease_s=0.01"):
        make_store(lease_s=0.01)
    with pytest.raises(ConfigurationError, match="max_attempts=0"):
        make_store(max_attempts=0)
    with pytest.raises(StoreError):
        make_store(poll_s=0)
    monkeypatch.setenv("FURTHER_MAX_ATTEMPTS", "many")
    with pytest.raises(ConfigurationError, match="FURTHER_MAX_ATTEMPTS='many'"):
        make_store()


def test_list_scans_result_dirs_and_skips_everything_else(store: ArtifactStore) -> None:
    from further_dagster.store import ReleaseHistory, StoredKey

    store.ensure("p", "c", KEY, Counter({"v": 1}), {})
    ReleaseHistory(store.root).record("p", "c", KEY2, "r1", utcnow())
    root = store.root
    (root / "stray.txt").write_text("not a project")
    (root / "bad-name" / "c" / KEY / "result").mkdir(parents=True)
    (root / "p" / "c" / "not_a_key" / "result").mkdir(parents=True)
    (root / "p" / "c" / KEY2).mkdir()  # an instance dir without a committed result
    (root / "p" / "c" / KEY2 / "result.tmp-abc").mkdir()
    (root / "p" / "c" / "notes.txt").write_text("x")
    assert (root / ".releases").is_dir()
    assert list(store.list()) == [StoredKey("p", "c", KEY)]
    assert list(ArtifactStore(root / "missing").list()) == []
