"""Lease: acquire, held by a live holder, taken over when expired, released only by its owner."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import pytest

from further_dagster import settings
from further_dagster.errors import ConfigurationError, StoreError
from further_dagster.store.lease import Lease
from further_dagster.store.records import LeaseRecord, utcnow

pytestmark = pytest.mark.unit


@pytest.fixture
def inst(tmp_path: Path) -> Path:
    d = tmp_path / "inst"
    d.mkdir()
    return d


def write_foreign_lock(inst: Path, *, age_s: float, lease_s: float, pid: int = 999999) -> None:
    """A lock written by some other process whose last heartbeat was `age_s` ago."""
    record = LeaseRecord(
        token="f" * 32, pid=pid, host="elsewhere", acquired_at=utcnow(), lease_s=lease_s
    )
    lock = inst / "lock"
    lock.write_text(record.model_dump_json())
    past = time.time() - age_s
    os.utime(lock, (past, past))


def test_acquire_writes_holder_record_and_release_removes_it(inst: Path) -> None:
    lease = Lease(inst, lease_s=5)
    assert lease.try_acquire() == "acquired"
    assert lease.held
    record = json.loads((inst / "lock").read_text())
    assert record["token"] == lease.token
    assert record["pid"] == os.getpid()
    assert record["lease_s"] == 5
    assert lease.try_acquire() == "acquired"  # idempotent for the holder
    assert lease.release() is True
    assert not (inst / "lock").exists()
    assert (inst / "lock.guard").exists()
    assert lease.release() is False  # nothing held any more


def test_second_lease_sees_live_holder(inst: Path) -> None:
    first, second = Lease(inst, lease_s=5), Lease(inst, lease_s=5)
    assert first.try_acquire() == "acquired"
    try:
        assert second.try_acquire() == "held"
        assert second.holder is not None and second.holder.record is not None
        assert second.holder.record.pid == os.getpid()
        assert second.holder.record.token == first.token
        assert f"pid {os.getpid()}" in second.holder.describe()
        assert not second.held
    finally:
        first.release()
    assert second.try_acquire() == "acquired"
    second.release()


def test_heartbeat_keeps_a_short_lease_alive(inst: Path) -> None:
    holder = Lease(inst, lease_s=0.6)
    assert holder.heartbeat_s == pytest.approx(0.2)
    holder.try_acquire()
    try:
        time.sleep(1.2)  # two lease lengths: only heartbeats keep it alive
        waiter = Lease(inst, lease_s=0.6)
        assert waiter.try_acquire() == "held"
        assert waiter.holder is not None and waiter.holder.age_s < 0.6
    finally:
        holder.release()


def test_expired_lease_is_taken_over_with_a_warning(
    inst: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_foreign_lock(inst, age_s=10, lease_s=1, pid=4321)
    lease = Lease(inst, lease_s=5)
    with caplog.at_level(logging.WARNING, logger="further.store.lease"):
        assert lease.try_acquire() == "took_over"
    try:
        assert lease.holder is not None and lease.holder.record is not None
        assert lease.holder.record.pid == 4321
        assert json.loads((inst / "lock").read_text())["token"] == lease.token
        assert "took over expired lease" in caplog.text
        assert "pid 4321 on host elsewhere" in caplog.text
    finally:
        assert lease.release() is True


def test_expiry_uses_the_holders_lease_not_the_waiters(inst: Path) -> None:
    write_foreign_lock(inst, age_s=3, lease_s=100)
    assert Lease(inst, lease_s=1).try_acquire() == "held"


def test_unreadable_lock_expires_by_the_waiters_lease(inst: Path) -> None:
    (inst / "lock").write_bytes(b"")  # writer died between create and write
    waiter = Lease(inst, lease_s=5)
    assert waiter.try_acquire() == "held"
    assert waiter.holder is not None and waiter.holder.record is None
    assert "unknown holder" in waiter.holder.describe()
    past = time.time() - 10
    os.utime(inst / "lock", (past, past))
    assert waiter.try_acquire() == "took_over"
    waiter.release()


def test_release_deletes_only_our_own_token(inst: Path) -> None:
    stalled = Lease(inst, lease_s=0.6)
    stalled.try_acquire()
    stalled._stop.set()  # simulate a process that stopped heart-beating (e.g. SIGSTOP)
    assert stalled._thread is not None
    stalled._thread.join()
    past = time.time() - 5
    os.utime(inst / "lock", (past, past))

    thief = Lease(inst, lease_s=5)
    assert thief.try_acquire() == "took_over"
    assert stalled.release() is False
    assert json.loads((inst / "lock").read_text())["token"] == thief.token
    assert thief.release() is True


def test_heartbeat_notices_a_lost_lease(inst: Path) -> None:
    lease = Lease(inst, lease_s=0.6)
    lease.try_acquire()
    write_foreign_lock(inst, age_s=0, lease_s=5)
    deadline = time.monotonic() + 2
    while not lease.lost and time.monotonic() < deadline:
        time.sleep(0.02)
    assert lease.lost
    assert lease.release() is False
    assert (inst / "lock").exists()  # the other holder's lock survives our release


def test_context_manager_acquires_releases_and_refuses_when_held(inst: Path) -> None:
    with Lease(inst, lease_s=5) as lease:
        assert lease.held
        with pytest.raises(StoreError, match="delete the lock file"):
            with Lease(inst, lease_s=5):
                pass
    assert not (inst / "lock").exists()


def test_lease_duration_defaults_and_validation(
    inst: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert settings.lease_s() == 15 and Lease(inst).lease_s == 15  # issue #8: was 60
    assert Lease(inst).heartbeat_s == 5
    monkeypatch.setenv("FURTHER_LEASE_SECS", "7.5")
    assert Lease(inst).lease_s == 7.5
    assert Lease(inst).heartbeat_s == 2.5
    monkeypatch.setenv("FURTHER_LEASE_SECS", "soon")
    with pytest.raises(ConfigurationError, match="FURTHER_LEASE_SECS='soon'"):
        Lease(inst)
    with pytest.raises(ConfigurationError, match=r"lease_s=0\.1 .*>= 0\.5"):
        Lease(inst, lease_s=0.1)


# --- a dead holder on this machine (issue #8) ------------------------------------------------


def _local_lock(inst: Path, *, pid: int, started: int | None, age_s: float = 0.0) -> None:
    from further_dagster.store import liveness
    from further_dagster.store.provenance import hostname

    record = LeaseRecord(
        token="e" * 32,
        pid=pid,
        host=hostname(),
        acquired_at=utcnow(),
        lease_s=60,
        machine=liveness.machine(),
        started=started,
    )
    (inst / "lock").write_text(record.model_dump_json())
    past = time.time() - age_s
    os.utime(inst / "lock", (past, past))


def _gone_pid() -> int:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        text=True,
        capture_output=True,
        check=True,
    )
    return int(done.stdout)


@pytest.fixture
def linux_proc() -> None:
    from further_dagster.store import liveness

    if liveness.machine() is None:
        pytest.skip("no /proc: a holder's liveness cannot be checked here")


@pytest.mark.usefixtures("linux_proc")
def test_a_lock_whose_pid_is_gone_is_taken_over_at_once(
    inst: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pid = _gone_pid()
    _local_lock(inst, pid=pid, started=12345)  # a fresh heartbeat, a 60 s lease
    lease = Lease(inst, lease_s=5)
    with caplog.at_level(logging.WARNING, logger="further.store.lease"):
        assert lease.try_acquire() == "took_over"
    assert lease.holder is not None and lease.holder.dead
    assert f"pid {pid}" in caplog.text and "that process is gone" in caplog.text
    lease.release()


@pytest.mark.usefixtures("linux_proc")
def test_a_reused_pid_is_not_the_holder(inst: Path) -> None:
    from further_dagster.store import liveness

    mine = liveness.own_start_time()
    assert mine is not None
    _local_lock(inst, pid=os.getpid(), started=mine + 1)  # our pid, another process's start
    lease = Lease(inst, lease_s=5)
    assert lease.try_acquire() == "took_over"
    lease.release()
    _local_lock(inst, pid=os.getpid(), started=mine)  # really us (another thread's lease)
    assert Lease(inst, lease_s=5).try_acquire() == "held"


def test_the_lock_record_names_the_holders_machine_and_start(inst: Path) -> None:
    from further_dagster.store import liveness

    lease = Lease(inst, lease_s=5)
    lease.try_acquire()
    try:
        record = LeaseRecord.model_validate_json((inst / "lock").read_bytes())
        assert record.machine == liveness.machine()
        assert record.started == liveness.own_start_time()
        assert not list(inst.glob(".lock.tmp-*"))  # created by a link, never half-written
    finally:
        lease.release()


def test_an_unwritable_lock_leaves_nothing_behind(
    inst: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    from further_dagster.store import lease as lease_module

    def full(fd: int, data: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(lease_module, "_write_all", full)
    with pytest.raises(OSError, match="No space"):
        Lease(inst, lease_s=5).try_acquire()
    assert sorted(p.name for p in inst.iterdir()) == ["lock.guard"]  # no empty, ownerless lock


def test_holding_refuses_a_lost_lease(inst: Path) -> None:
    lease = Lease(inst, lease_s=5)
    lease.try_acquire()
    with lease.holding() as ours:
        assert ours
    write_foreign_lock(inst, age_s=0, lease_s=5)  # taken over while we stalled
    with lease.holding() as ours:
        assert not ours
    assert lease.lost
    assert lease.release() is False and (inst / "lock").exists()
