"""A lease on one instance directory: lock file + heartbeat, safe across processes and hosts.

Why a lease and not a plain `flock` held during the whole computation: a flock dies with the
process but is unreliable on network filesystems and invisible to a waiter on another host, and
it says nothing about *who* holds it. The lease is a small JSON file (`lock`) naming its holder;
the holder proves it is alive by touching the file's mtime from a daemon thread every
`lease_s / 3` seconds (at least 0.2 s). A lock whose mtime is older than the holder's `lease_s`
belongs to a dead process and may be taken over.

The `lock.guard` flock is held only for the microseconds it takes to create, take over or
delete the lock file, so that two waiters cannot both take over one expired lease, and a
release cannot delete a lock that was just taken over by someone else.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal

from further_dagster import settings
from further_dagster.errors import StoreError
from further_dagster.store import layout
from further_dagster.store.provenance import hostname
from further_dagster.store.records import LeaseRecord, utcnow, write_atomic

log = logging.getLogger("further.store.lease")

AcquireResult = Literal["acquired", "took_over", "held"]


@dataclass(frozen=True)
class LockHolder:
    """Another process's lease as seen by a waiter: its record and seconds since its heartbeat.

    `record` is None when the lock file could not be parsed (its writer died mid-write); such a
    lock expires like any other.
    """

    record: LeaseRecord | None
    age_s: float

    def describe(self) -> str:
        """'pid 123 on host h' (or 'an unknown holder'), for log and error messages."""
        if self.record is None:
            return "an unknown holder (unreadable lock file)"
        return f"pid {self.record.pid} on host {self.record.host}"


class Lease:
    """A lease on `<instance>/lock`, with its heartbeat thread while held.

    Use `try_acquire()` (never blocks on another holder) and `release()`, or `with lease:`,
    which acquires or raises `StoreError` naming the live holder. `lease_s` defaults to
    `FURTHER_LEASE_SECS` or 60 (`further_dagster.settings`; `ConfigurationError` if not allowed).
    """

    def __init__(self, instance_dir: Path, *, lease_s: float | None = None) -> None:
        self.lease_s = settings.lease_s(lease_s)
        self.heartbeat_s = max(self.lease_s / 3.0, settings.MIN_HEARTBEAT_S)
        self.lock_path = layout.lock_path(instance_dir)
        self.guard_path = layout.guard_path(instance_dir)
        self.token = uuid.uuid4().hex
        self.holder: LockHolder | None = None
        """The live holder after a `held` result, or the dead one after a `took_over`."""
        self.lost = False
        """Set when the heartbeat finds the lock gone or owned by another token."""
        self._held = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def held(self) -> bool:
        """True between a successful acquisition and `release()`."""
        return self._held

    # --- acquisition --------------------------------------------------------------------

    @contextmanager
    def _guard(self) -> Iterator[None]:
        fd = os.open(self.guard_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the flock

    def _record_bytes(self) -> bytes:
        record = LeaseRecord(
            token=self.token,
            pid=os.getpid(),
            host=hostname(),
            acquired_at=utcnow(),
            lease_s=self.lease_s,
        )
        return record.model_dump_json().encode("utf-8")

    def _read_holder(self) -> LockHolder | None:
        """The current lock's record and age, or None if there is no lock file."""
        try:
            with open(self.lock_path, "rb") as fh:
                age = time.time() - os.fstat(fh.fileno()).st_mtime
                data = fh.read()
        except FileNotFoundError:
            return None
        try:
            record: LeaseRecord | None = LeaseRecord.model_validate_json(data)
        except ValueError:
            record = None
        return LockHolder(record=record, age_s=age)

    def try_acquire(self) -> AcquireResult:
        """Take the lease if it is free or expired; never waits for a live holder.

        Returns "acquired" (lock was free, or is already ours), "took_over" (the previous
        holder stopped heart-beating for longer than its lease; a warning names it) or "held"
        (a live holder has it; see `self.holder`).
        """
        if self._held:
            return "acquired"
        with self._guard():
            try:
                fd = os.open(self.lock_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                holder = self._read_holder()
                if holder is None:  # deleted by hand between open and read: retry once
                    return self._create_after_vanish()
                limit = holder.record.lease_s if holder.record is not None else self.lease_s
                if holder.age_s <= limit:
                    self.holder = holder
                    return "held"
                write_atomic(self.lock_path, self._record_bytes())
                self.holder = holder
                log.warning(
                    "took over expired lease %s from %s: no heartbeat for %.1fs (lease %.1fs); "
                    "its computation is presumed dead",
                    self.lock_path,
                    holder.describe(),
                    holder.age_s,
                    limit,
                )
                self._start()
                return "took_over"
            try:
                os.write(fd, self._record_bytes())
            finally:
                os.close(fd)
        self.holder = None
        self._start()
        return "acquired"

    def _create_after_vanish(self) -> AcquireResult:
        write_atomic(self.lock_path, self._record_bytes())
        self.holder = None
        self._start()
        return "acquired"

    # --- heartbeat ----------------------------------------------------------------------

    def _start(self) -> None:
        self._held = True
        self.lost = False
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._beat, name=f"further-lease-heartbeat-{self.token[:8]}", daemon=True
        )
        self._thread.start()

    def _still_ours(self) -> bool:
        try:
            data = self.lock_path.read_bytes()
        except FileNotFoundError:
            return False
        try:
            return bool(json.loads(data).get("token") == self.token)
        except (ValueError, AttributeError):
            return False

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                if not self._still_ours():
                    self.lost = True
                    log.warning(
                        "lease %s was taken over by another process (this process stalled "
                        "longer than lease_s=%.1fs); the result may be computed twice, and the "
                        "first commit wins",
                        self.lock_path,
                        self.lease_s,
                    )
                    return
                os.utime(self.lock_path)
            except FileNotFoundError:
                self.lost = True
                return
            except OSError as exc:  # transient NFS hiccup: try again next beat
                log.warning("heartbeat on %s failed: %s", self.lock_path, exc)

    def beat_now(self) -> None:
        """Touch the lock immediately (useful before a long blocking call)."""
        if self._held and self._still_ours():
            os.utime(self.lock_path)

    # --- release ------------------------------------------------------------------------

    def release(self) -> bool:
        """Stop the heartbeat and delete the lock if it still carries our token.

        Returns True if our lock was removed, False if we did not hold it (never acquired, or
        taken over after we stalled: the new holder's lock is left alone).
        """
        if not self._held:
            return False
        self._held = False
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None
        with self._guard():
            if not self._still_ours():
                return False
            try:
                os.unlink(self.lock_path)
            except FileNotFoundError:
                return False
        return True

    def __enter__(self) -> Lease:
        if self.try_acquire() == "held":
            assert self.holder is not None
            raise StoreError(
                f"lease {self.lock_path} is held by {self.holder.describe()} (heartbeat "
                f"{self.holder.age_s:.1f}s ago); wait for it, or delete the lock file if that "
                f"process is gone"
            )
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
