"""A lease on one instance directory: lock file + heartbeat, safe across processes and hosts.

Why a lease and not a plain `flock` held during the whole computation: a flock dies with the
process but is unreliable on network filesystems and invisible to a waiter on another host, and
it says nothing about *who* holds it. The lease is a small JSON file (`lock`) naming its holder;
the holder proves it is alive by touching the file's mtime (and its attempt's temporary result
directory) every `lease_s / 3` seconds (at least 0.2 s), from one daemon thread per process
that beats every lease the process holds (a thread per lease cost a start and a join per
computed cell). A lock whose
mtime is older than the holder's `lease_s` belongs to a dead or stalled process and may be
taken over. On the holder's own machine a waiter need not wait that long: if the kernel says
the holder's pid is gone (or is now another process), the lock is taken over at once
(`liveness.py`).

The `lock.guard` flock is held only for the microseconds it takes to create, take over or
delete the lock file, or to write the instance's state, so that two waiters cannot both take
over one expired lease, a release cannot delete a lock that was just taken over by someone
else, and a holder that lost its lease cannot write state after the taker did (`holding()`).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import shutil
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
from further_dagster.store import layout, liveness
from further_dagster.store.provenance import hostname
from further_dagster.store.records import LeaseRecord, utcnow, write_atomic

log = logging.getLogger("further.store.lease")

AcquireResult = Literal["acquired", "took_over", "held"]

_NO_HARD_LINKS = frozenset(
    {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK, errno.ENOSYS}
)
_SIGNAL_GUARD_TRIES = 50  # x 10 ms: a signal handler never blocks on the guard for long


@dataclass(frozen=True)
class LockHolder:
    """Another process's lease as seen by a waiter: its record and seconds since its heartbeat.

    `record` is None when the lock file could not be parsed (its writer died mid-write); such a
    lock expires like any other. `dead` is True when this machine proved the holder's process
    is gone (only possible on the holder's own machine).
    """

    record: LeaseRecord | None
    age_s: float
    dead: bool = False

    def describe(self) -> str:
        """'pid 123 on host h' (or 'an unknown holder'), for log and error messages."""
        if self.record is None:
            return "an unknown holder (unreadable lock file)"
        return f"pid {self.record.pid} on host {self.record.host}"


class Lease:
    """A lease on `<instance>/lock`, beaten by the process's heartbeat thread while held.

    Use `try_acquire()` (never blocks on another holder) and `release()`, or `with lease:`,
    which acquires or raises `StoreError` naming the live holder. `lease_s` defaults to
    `FURTHER_LEASE_SECS` or 15 (`further_dagster.settings`; `ConfigurationError` if not allowed).
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
        """Set once the lock is found gone or owned by another token: this process stalled past
        its lease (or was interrupted) and must not write state or delete the new lock."""
        self._held = False
        self._state_lock = threading.Lock()
        self._stop = threading.Event()  # set: beat no more (released, or a test's stall)
        self._stopped = threading.Event()  # set once no beat runs or will run for this lease
        self._beat_lock = threading.Lock()  # held during one beat; a release waits for it
        self._thread: _Beating | None = None
        self._watched: set[Path] = set()
        self._guard_fd: int | None = None
        self._guard_mutex = threading.Lock()

    @property
    def held(self) -> bool:
        """True between a successful acquisition and `release()`."""
        return self._held

    # --- acquisition --------------------------------------------------------------------

    @contextmanager
    def _guard(self, *, patient: bool = True) -> Iterator[bool]:
        """Hold the guard flock; yields False if `patient=False` could not get it quickly.

        While the lease is held its guard descriptor stays open (one `open` less per state
        write); threads of this process then exclude each other with a mutex, since a flock
        is per open file description and would let them all in.
        """
        shared = self._guard_fd
        if shared is None:
            fd = os.open(self.guard_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
            try:
                yield _flock(fd, patient)
            finally:
                os.close(fd)  # closing the descriptor releases the flock
            return
        if not self._guard_mutex.acquire(timeout=-1 if patient else 0.5):
            yield False
            return
        try:
            locked = _flock(shared, patient)
            try:
                yield locked
            finally:
                if locked:
                    fcntl.flock(shared, fcntl.LOCK_UN)
        finally:
            self._guard_mutex.release()

    def _record_bytes(self) -> bytes:
        record = LeaseRecord(
            token=self.token,
            pid=os.getpid(),
            host=hostname(),
            acquired_at=utcnow(),
            lease_s=self.lease_s,
            machine=liveness.machine(),
            started=liveness.own_start_time(),
        )
        return record.model_dump_json().encode("utf-8")

    def _read_holder(self) -> LockHolder | None:
        """The current lock's record, age and liveness, or None if there is no lock file."""
        try:
            fd = os.open(self.lock_path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            return None
        with os.fdopen(fd, "rb") as fh:
            age = time.time() - os.fstat(fh.fileno()).st_mtime
            data = fh.read()
        try:
            record: LeaseRecord | None = LeaseRecord.model_validate_json(data)
        except ValueError:
            record = None
        dead = record is not None and liveness.holder_is_dead(
            record.host, record.pid, record.machine, record.started
        )
        return LockHolder(record=record, age_s=age, dead=dead)

    def try_acquire(self) -> AcquireResult:
        """Take the lease if it is free, expired or its holder is dead; never waits for a live
        holder.

        Returns "acquired" (lock was free, or is already ours), "took_over" (the previous
        holder's process is gone, or it stopped heart-beating for longer than its lease; a
        warning names it) or "held" (a live holder has it; see `self.holder`).
        Raises `OSError` if the lock cannot be written (the caller names the instance and the
        fix); no lock file of ours is left behind then.
        """
        if self._held:
            return "acquired"
        with self._guard():
            if os.path.lexists(self.lock_path):
                return self._take_over_if_expired()
            try:
                self._create_lock()
            except FileExistsError:
                return self._take_over_if_expired()
        self.holder = None
        self._start()
        return "acquired"

    def _create_lock(self) -> None:
        """Create the lock with its record in place: written to a temporary file and hard-linked
        to `lock` (atomic, and it fails if a lock exists), so that a process killed at any
        point never leaves an empty lock that nobody can attribute (which would block others
        for a whole lease). Where hard links are not supported, create-exclusive and write.
        Called under the guard, after checking that no lock exists (so no holder is cleaning
        up temporaries meanwhile)."""
        data = self._record_bytes()
        tmp = self.lock_path.with_name(f".{self.lock_path.name}.tmp-{self.token}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        try:
            try:
                _write_all(fd, data)
            finally:
                os.close(fd)
            try:
                os.link(tmp, self.lock_path, follow_symlinks=False)
                return
            except FileExistsError:
                raise
            except OSError as exc:
                if exc.errno not in _NO_HARD_LINKS:
                    raise
        finally:
            _unlink_quietly(tmp)
        fd = os.open(self.lock_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        try:
            _write_all(fd, data)
        except BaseException:
            os.close(fd)
            _unlink_quietly(self.lock_path)  # never leave an empty, ownerless lock
            raise
        os.close(fd)

    def _take_over_if_expired(self) -> AcquireResult:
        holder = self._read_holder()
        if holder is None:  # deleted between open and read: create it
            write_atomic(self.lock_path, self._record_bytes())
            self.holder = None
            self._start()
            return "acquired"
        limit = holder.record.lease_s if holder.record is not None else self.lease_s
        if holder.age_s <= limit and not holder.dead:
            self.holder = holder
            return "held"
        write_atomic(self.lock_path, self._record_bytes())
        self.holder = holder
        if holder.dead:
            log.warning(
                "took over lease %s from %s at once: that process is gone (checked on its own "
                "machine)",
                self.lock_path,
                holder.describe(),
            )
        else:
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

    # --- heartbeat ----------------------------------------------------------------------

    def _start(self) -> None:
        try:
            self._guard_fd = os.open(self.guard_path, os.O_RDWR | os.O_NOFOLLOW)
        except OSError:  # pragma: no cover - it was just flocked; fall back to one per use
            self._guard_fd = None
        self._held = True
        self.lost = False
        self._stop.clear()
        self._stopped.clear()
        self._thread = _Beating(self._stopped)
        _HEART.add(self)

    def watch(self, path: Path) -> None:
        """Touch `path` at every heartbeat too (the attempt's temporary result directory), so
        that its mtime says whether its writer is alive."""
        self._watched.add(path)

    def unwatch(self, path: Path) -> None:
        """Stop touching `path`."""
        self._watched.discard(path)

    def _still_ours(self) -> bool:
        try:
            fd = os.open(self.lock_path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            return False
        with os.fdopen(fd, "rb") as fh:
            data = fh.read()
        try:
            return bool(json.loads(data).get("token") == self.token)
        except (ValueError, AttributeError):
            return False

    def _beat(self) -> bool:
        """One heartbeat (from `_Heart`); False when this lease is beaten no more."""
        with self._beat_lock:
            if self._stop.is_set() or not self._held:
                self._stopped.set()
                return False
            try:
                if not self._still_ours():
                    self.lost = True
                    log.warning(
                        "lease %s was taken over by another process (this process stalled "
                        "longer than lease_s=%.1fs); this attempt will not write state, and "
                        "the first commit wins",
                        self.lock_path,
                        self.lease_s,
                    )
                    self._stopped.set()
                    return False
                os.utime(self.lock_path)
                for path in list(self._watched):
                    try:
                        os.utime(path, follow_symlinks=False)
                    except FileNotFoundError:
                        self._watched.discard(path)
            except FileNotFoundError:
                self.lost = True
                self._stopped.set()
                return False
            except OSError as exc:  # transient NFS hiccup: try again next beat
                log.warning("heartbeat on %s failed: %s", self.lock_path, exc)
            return True

    def beat_now(self) -> None:
        """Touch the lock immediately (useful before a long blocking call)."""
        if self._held and self._still_ours():
            os.utime(self.lock_path)

    @contextmanager
    def holding(self, *, patient: bool = True) -> Iterator[bool]:
        """Yield True, with the guard held, if the lock is still ours: what is done inside (a
        state write) cannot interleave with a takeover. Yields False (and sets `lost`) if the
        lease was lost or released. `patient=False` (a signal handler) waits at most ~0.5 s
        for the guard, then checks without it.
        """
        if not self._held or self.lost:
            yield False
            return
        with self._guard(patient=patient):
            ours = self._still_ours()
            if not ours:
                self.lost = True
            yield ours

    # --- release ------------------------------------------------------------------------

    def release(self, *, patient: bool = True) -> bool:
        """Stop the heartbeat and delete the lock if it still carries our token.

        Returns True if our lock was removed, False if we did not hold it (never acquired,
        released already, or taken over after we stalled: the new holder's lock is left
        alone). Safe to call from several threads; `patient=False` is for signal handlers.
        """
        if not self._state_lock.acquire(blocking=patient):
            return False  # a signal handler interrupted our own release: dead-pid takeover
        try:
            if not self._held:
                return False
            self._held = False
        finally:
            self._state_lock.release()
        self._stop.set()
        _HEART.remove(self, patient=patient)
        self._thread = None
        # a beat under way finishes before the lock goes (none starts after `_stop`); a
        # signal handler that interrupted that very beat does not wait for it
        if self._beat_lock.acquire(timeout=5.0 if patient else 0):
            self._stopped.set()
            self._beat_lock.release()
        self._watched.clear()
        try:
            with self._guard(patient=patient):
                if not self._still_ours():
                    return False
                try:
                    os.unlink(self.lock_path)
                except FileNotFoundError:
                    return False
            return True
        finally:
            self._close_guard(patient)

    def _close_guard(self, patient: bool) -> None:
        if not self._guard_mutex.acquire(timeout=-1 if patient else 0.5):
            return  # a signal handler: the process is about to exit anyway
        try:
            fd, self._guard_fd = self._guard_fd, None
        finally:
            self._guard_mutex.release()
        if fd is not None:
            os.close(fd)

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


class _Beating:
    """What a lease's heartbeat looks like from outside: `join()` returns once it stopped."""

    def __init__(self, stopped: threading.Event) -> None:
        self._stopped = stopped

    def join(self, timeout: float | None = None) -> None:
        self._stopped.wait(timeout)


class _Heart:
    """The process's one heartbeat thread: beats each held lease every `heartbeat_s`."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._due: dict[Lease, float] = {}  # lease -> monotonic time of its next beat
        self._thread: threading.Thread | None = None
        self._wakes_at = 0.0  # when the thread wakes next by itself

    def add(self, lease: Lease) -> None:
        with self._cond:
            at = self._due[lease] = time.monotonic() + lease.heartbeat_s
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="further-lease-heartbeat", daemon=True
                )
                self._thread.start()
            elif at < self._wakes_at:  # else waking it costs a thread switch per lease
                self._cond.notify()

    def remove(self, lease: Lease, *, patient: bool = True) -> None:
        """Beat `lease` no more; `patient=False` (a signal handler, which may have interrupted
        this very thread inside `add`) leaves it to the thread, which drops a stopped lease."""
        if not self._cond.acquire(blocking=patient):
            return
        try:
            self._due.pop(lease, None)
        finally:
            self._cond.release()

    def _run(self) -> None:
        while True:
            with self._cond:
                now = time.monotonic()
                due = [lease for lease, at in self._due.items() if at <= now]
                if not due:
                    self._wakes_at = min(self._due.values(), default=now + 60.0)
                    self._cond.wait(max(self._wakes_at - now, 0.01))
                    continue
                for lease in due:
                    self._due[lease] = now + lease.heartbeat_s
            for lease in due:
                if not lease._beat():
                    self.remove(lease)


_HEART = _Heart()
# a forked child has no heartbeat thread and holds none of its parent's leases
os.register_at_fork(after_in_child=_HEART._reset)


def _flock(fd: int, patient: bool) -> bool:
    """Take the exclusive flock on `fd`; `patient=False` gives up after ~0.5 s (False)."""
    if patient:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return True
    for _ in range(_SIGNAL_GUARD_TRIES):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            time.sleep(0.01)
            continue
        return True
    return False


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:  # pragma: no cover - a full disk raises ENOSPC instead
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        view = view[written:]


def _unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


__all__ = ["AcquireResult", "Lease", "LockHolder"]


# --- what earlier attempts left ---------------------------------------------------------


def _is_token(value: str) -> bool:
    return len(value) == 32 and all(c in "0123456789abcdef" for c in value)


def remove_stale_temporaries(inst: Path, lease: Lease) -> None:
    """Remove what earlier attempts left, never what a live one may still be writing.

    Called while holding `lease`. A `result.tmp-<token>` of another attempt is removed only if
    its owner's lease is over (we hold the lease now) and its mtime, which the owner's
    heartbeat touches, is older than the lease, or if its owner is the holder whose death this
    machine just proved. A temporary whose name carries no lease token (older versions, or made
    by hand) and stray record temp files (written only under the guard, by the holder) go too.
    """
    holder = lease.holder
    dead = holder.record.token if holder and holder.dead and holder.record else None
    now = time.time()
    with os.scandir(inst) as entries:
        for entry in entries:
            name = entry.name
            if layout.is_result_tmp_name(name):
                token = name[len(layout.RESULT_TMP_PREFIX) :]
                if token == lease.token:
                    continue
                if _is_token(token) and token != dead and not _older(entry, now, lease.lease_s):
                    continue  # its owner may be a stalled holder that resumes: leave it be
                _remove(entry)
            elif name.startswith(".") and ".tmp-" in name:
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)


def _older(entry: os.DirEntry[str], now: float, seconds: float) -> bool:
    try:
        return now - entry.stat(follow_symlinks=False).st_mtime > seconds
    except FileNotFoundError:
        return True


def _remove(entry: os.DirEntry[str]) -> None:
    if entry.is_dir(follow_symlinks=False):
        shutil.rmtree(entry.path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            os.unlink(entry.path)
