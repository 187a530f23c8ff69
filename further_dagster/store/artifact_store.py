"""`ArtifactStore`: compute a logic key's contributions exactly once, store them, load them.

The contract, across threads, processes and hosts sharing a root:

* "stored" means `<instance>/result/` exists, checked with one `stat`; a cached lookup costs a
  few microseconds and takes no lock;
* a load returns a result only if it is intact (`store.integrity`: real directories, a
  consistent manifest, sizes and digests) and its pickles are trusted; a damaged one is moved
  aside by `quarantine` (never deleted), after which the key is no longer stored;
* a result is written into the attempt's own `result.tmp-<lease token>/` and committed by one
  `os.rename`, so a reader sees all of it or nothing, and a crash leaves no `result/`;
* the computer holds a lease (see `lease.py`); others wait for it and then load, and take it
  over if its heartbeat stops, or at once when its process is gone from this machine, so a
  killed computation is redone once; a holder that lost its lease never writes state;
* a failing computation is recorded in `state.json` with its traceback and retried on later
  calls until `max_attempts` failures, after which the stored error is raised without running
  until retried (`reset_failures`); interrupted and environment attempts do not count, and a
  `ContributionError` refuses the key at once (see `attempt.py`).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from further_dagster import settings
from further_dagster.core.names import is_identifier
from further_dagster.errors import (
    LockTimeout,
    StoreError,
)
from further_dagster.store import environment, integrity, interrupts, layout
from further_dagster.store.attempt import Attempt
from further_dagster.store.base import ComputeFn, Outcome, StoredKey
from further_dagster.store.lease import Lease
from further_dagster.store.provenance import process_facts
from further_dagster.store.reading import ResultReading
from further_dagster.store.records import (
    PROVENANCE_INPUT_FIELDS,
    Provenance,
    State,
    provenance_input_errors,
    read_record,
    utcnow,
    write_record,
)

log = logging.getLogger("further.store")

WAIT_LOG_EVERY_S = 10.0

# Instance dirs whose lease a thread of this process holds, to refuse re-entrant ensure calls
# (which would otherwise wait on their own lease until the timeout).
_held_by_thread: dict[str, int] = {}

_warmed: set[tuple[str, str, int]] = set()  # (index URL, root, pid) whose index warm_index opens
_warm_lock = threading.Lock()


def _index_url(root: Path, given: str | None) -> str | None:
    """The index URL a store writes (None: no index), from `index_url=` and the settings."""
    url = settings.index_url(given)
    if url is None:
        return settings.default_index_url(root)
    return None if url == settings.INDEX_DISABLED else url


def _trusted(projects: Iterable[str], what: str) -> frozenset[str]:
    if isinstance(projects, str):
        raise StoreError(f"{what} must be a list of project names, not the str {projects!r}")
    return frozenset(layout.validate_name(p, "project") for p in projects)


class ArtifactStore(ResultReading):
    """The local-filesystem artifact store rooted at `root`; implements `store.base.Store`.

    Defaults come from `further_dagster.settings`, and explicit arguments are validated by the
    same rules.

    Args:
        root: store root; default `FURTHER_ROOT`, else `<project>/.further`.
        lease_s: lease duration without heartbeat; default `FURTHER_LEASE_SECS`.
        wait_timeout_s: how long to wait for another process's live lease before `LockTimeout`;
            default `FURTHER_WAIT_TIMEOUT_SECS` or 3600.
        poll_s: how often a waiter checks for the result or an expired lease.
        max_attempts: failed attempts after which `ensure` raises the stored error instead of
            running again; default `FURTHER_MAX_ATTEMPTS` or 3.
        verify: what every load compares with the manifest: "digest" (sizes and blake2b
            digests; the default, or `FURTHER_VERIFY`) or "size" (sizes only, for huge files).
        shared: the root is shared between users on purpose: pickled contributions are read
            from instance directories other users own or can write. Default
            `FURTHER_SHARED_STORE`, else False (such pickles raise `UntrustedPickleError`).
        trust: projects whose pickled contributions a cell of another project may read as
            inputs (`Session(trust=...)` and `build_definitions(trust=...)` add to it); a
            cell's inputs from its own project never need it.
        fsync: flush every file and directory of a result to disk before its commit rename
            (survives a power loss; costs a few ms per computed instance); default
            `FURTHER_FSYNC` or False.
        index_url: the SQL index (store/index/) written right after every commit: a SQLAlchemy
            URL, default `FURTHER_INDEX_URL`, else SQLite at `<root>/.index.sqlite`; "none"
            keeps no index. A failing index never fails a commit (a warning names it and
            `further-dagster index rebuild`).

    Interrupted and environment attempts do not count toward `max_attempts`;
    `reset_failures` (a retry) starts the count again.

    Raises:
        ConfigurationError: a setting or argument is not allowed (the message names it).
    """

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        *,
        lease_s: float | None = None,
        wait_timeout_s: float | None = None,
        poll_s: float = 0.2,
        max_attempts: int | None = None,
        verify: settings.VerifyMode | None = None,
        shared: bool | None = None,
        trust: Iterable[str] = (),
        fsync: bool | None = None,
        index_url: str | None = None,
    ) -> None:
        self.root: Path = settings.store_root(root)
        self._root_str = str(self.root)
        self.lease_s = settings.lease_s(lease_s)
        self.wait_timeout_s = settings.wait_timeout_s(wait_timeout_s)
        if poll_s <= 0:
            raise StoreError(f"poll_s={poll_s} must be positive")
        self.poll_s = float(poll_s)
        self.max_attempts = settings.max_attempts(max_attempts)
        self.verify: settings.VerifyMode = settings.verify(verify)
        self.shared: bool = settings.shared_store(shared)
        self.trust: frozenset[str] = _trusted(trust, "trust")
        self.fsync = settings.fsync(fsync)
        self.index_url: str | None = _index_url(self.root, index_url)
        interrupts.install_signal_handlers()  # SIGTERM releases leases (main thread only)

    def __repr__(self) -> str:
        return f"ArtifactStore(root={self._root_str!r})"

    def with_trust(self, projects: Iterable[str]) -> ArtifactStore:
        """This store (same root and settings) also trusting `projects`' pickles; `self` if it
        trusts them already."""
        more = _trusted(projects, "trust")
        if more <= self.trust:
            return self
        other = copy.copy(self)
        other.trust = self.trust | more
        return other

    def with_index(self, index_url: str | None) -> ArtifactStore:
        """This store writing the index at `index_url` (as the constructor takes it)."""
        other = copy.copy(self)
        other.index_url = _index_url(self.root, index_url)
        return other

    def reindex(self, project: str, cell: str, key: str, *, fresh: bool = False) -> None:
        """Make the instance's index rows what its files say (`fresh`: just committed for the
        first time); never raises: a failing index logs a warning (see store/index)."""
        if self.index_url is not None:
            from further_dagster.store.index.writer import writer_for

            writer = writer_for(self.index_url, self._root_str)
            writer.record_quietly(project, cell, key, fresh=fresh)

    def _prepare_index(self) -> None:
        """Open (create) the index before the first commit of this process (see
        `IndexWriter.prepare_quietly`); never raises."""
        if self.index_url is not None:
            from further_dagster.store.index.writer import writer_for

            writer_for(self.index_url, self._root_str).prepare_quietly()

    def warm_index(self) -> None:
        """Start opening the index on a background thread, once per process: the scheduler
        calls it as a run starts, so that importing SQLAlchemy and creating the schema
        (~0.3 s) overlap the first make()s instead of delaying the first commit."""
        if self.index_url is None:
            return
        slot = (self.index_url, self._root_str, os.getpid())
        with _warm_lock:
            if slot in _warmed:
                return
            _warmed.add(slot)
        threading.Thread(target=self._prepare_index, name="further-index", daemon=True).start()

    def quarantine(self, project: str, cell: str, key: str, reason: str) -> Path | None:
        moved = super().quarantine(project, cell, key, reason)
        if moved is not None:
            self.reindex(project, cell, key)
        return moved

    # --- reading --------------------------------------------------------------------------

    def instance_dir(self, project: str, cell: str, key: str) -> Path:
        """`<root>/<project>/<cell>/<key>` (validated; not created)."""
        return layout.instance_dir(self.root, project, cell, key)

    def is_stored(self, project: str, cell: str, key: str) -> bool:
        """True if the key's result is committed: one `stat` of `<instance>/result`.

        A cheap lookup that trusts the stat: `is_intact` also checks the files, and `load`
        checks everything.
        """
        return os.path.isdir(layout.result_dir_str(self._root_str, project, cell, key))

    def read_state(self, project: str, cell: str, key: str) -> State | None:
        """The State record, or None if no attempt was ever started for this key."""
        path = layout.state_path(self.instance_dir(project, cell, key))
        try:
            return read_record(path, State)
        except FileNotFoundError:
            return None

    # --- computing ------------------------------------------------------------------------

    def ensure(
        self,
        project: str,
        cell: str,
        key: str,
        compute: ComputeFn,
        provenance: Mapping[str, Any],
    ) -> Outcome:
        """Make sure the key is stored, computing it here if no one else has or is.

        `compute(tmp_dir, logger)` returns contribution name -> value; each value is encoded by
        the first codec that takes it. `provenance` may hold `logic_version`, `api_version`,
        `specs`, `opts`, `deps`, `releases`, `extra` (and `project`, `cell`, `key`, which must
        match the arguments); it is validated before anything runs, and merged with this
        process's facts and the timings into `result/provenance.json`.
        Raises `CellComputeError` if compute raises (or failed `max_attempts` times before),
        `ContributionError` if it returned wrong contributions (now or before), `LockTimeout` if
        another holder keeps a live lease past `wait_timeout_s`, `StoreError` (naming the cell,
        key, path and fix) if the store cannot be written (disk full, read-only root), and
        re-raises `KeyboardInterrupt`/`SystemExit` (recorded as interrupted). No lock of ours
        is left behind in any case.
        """
        inst_str = layout.instance_dir_str(self._root_str, project, cell, key)
        result_str = os.path.join(inst_str, layout.RESULT_NAME)
        inst = Path(inst_str)
        if os.path.isdir(result_str):
            return Outcome(hit=True, waited=False, key=key, path=inst, duration_s=0.0, attempts=0)

        draft = self._draft_provenance(project, cell, key, provenance)
        if _held_by_thread.get(inst_str) == threading.get_ident():
            raise StoreError(
                f"{project}.{cell}@{key[:8]} is being computed by this very thread: its compute "
                f"asked for its own key (a dependency cycle); break the cycle"
            )
        interrupts.install_signal_handlers()
        lease = Lease(inst, lease_s=self.lease_s)
        try:
            integrity.check_instance_dirs(self._root_str, project, cell, key)  # no symlinks
            inst.mkdir(parents=True, exist_ok=True)
            acquired, waited = self._acquire_or_wait(lease, project, cell, key, result_str)
        except OSError as exc:
            raise self._environment_error(exc, project, cell, key, "taking the lease") from exc
        if not acquired:
            return Outcome(hit=True, waited=True, key=key, path=inst, duration_s=0.0, attempts=0)
        _held_by_thread[inst_str] = threading.get_ident()
        try:
            if os.path.isdir(result_str):  # committed by someone between our check and lease
                return Outcome(
                    hit=True, waited=waited, key=key, path=inst, duration_s=0.0, attempts=0
                )
            attempt = Attempt(
                project,
                cell,
                key,
                inst,
                self.max_attempts,
                lease,
                root=self.root,
                fsync=self.fsync,
                before_commit=self._prepare_index,
            )
            try:
                done = attempt.run(compute, draft)
            except Exception:
                self.reindex(project, cell, key)  # the failed state is indexed too
                raise
            if not done.hit:  # after the commit rename: the index can never lose a result
                self.reindex(project, cell, key, fresh=True)
            return Outcome(
                hit=done.hit,
                waited=waited or done.hit,
                key=key,
                path=inst,
                duration_s=0.0 if done.hit else done.duration_s,
                attempts=0 if done.hit else done.attempt,
            )
        finally:
            _held_by_thread.pop(inst_str, None)
            try:
                lease.release()
            except OSError as exc:  # do not mask what happened; a dead pid's lock is taken at once
                log.error("could not release the lease %s: %s", lease.lock_path, exc)

    def _environment_error(
        self, exc: OSError, project: str, cell: str, key: str, doing: str
    ) -> StoreError:
        return environment.explain(
            exc,
            label=f"{project}.{cell}@{key[:8]}",
            key=key,
            root=self.root,
            doing=doing,
            path=self.instance_dir(project, cell, key),
        )

    def reset_failures(self, project: str, cell: str, key: str) -> State | None:
        """Retry a refused key: reset its counted failures (and a deterministic failure's
        refusal) so that the next `ensure` runs it again. The reset is recorded in the state
        (`failures=0`, `reset_at`) and in the cell log.

        Returns the new state, or None when there is nothing to reset (no failed state, or the
        key is stored, or another process is computing it right now).

        Raises:
            StoreError: the store cannot be written (naming the path and the fix).
        """
        inst = self.instance_dir(project, cell, key)
        previous = self.read_state(project, cell, key)
        if previous is None or previous.status != "failed" or self.is_stored(project, cell, key):
            return None
        lease = Lease(inst, lease_s=self.lease_s)
        try:
            if lease.try_acquire() == "held":
                return None
            try:
                current = self.read_state(project, cell, key)
                if current is None or current.status != "failed" or current.failures == 0:
                    return None
                now = utcnow()
                reset = current.model_copy(update={"failures": 0, "reset_at": now})
                with lease.holding() as ours:
                    if not ours:
                        return None
                    write_record(layout.state_path(inst), reset, fsync=self.fsync)
            finally:
                lease.release()
        except OSError as exc:
            raise self._environment_error(exc, project, cell, key, "resetting its state") from exc
        with contextlib.suppress(OSError), open(layout.log_path(inst), "a") as fh:
            fh.write(
                f"{now.isoformat()} retry: {current.failures} failure(s) of "
                f"{project}.{cell}@{key[:8]} reset by pid {os.getpid()}; the next call runs it\n"
            )
        log.info("%s.%s@%s: failures reset; the next call runs it", project, cell, key[:8])
        self.reindex(project, cell, key)
        return reset

    def interrupt(self, project: str, cell: str, key: str, reason: str = "interrupted") -> bool:
        """Interrupt the attempt that a thread of this process runs for the key (a Session's
        caller pressed Ctrl-C and the thread cannot be killed): record it as `interrupted`,
        release its lease at once, and discard what its make() returns later. False if no
        thread of this process is computing the key."""
        inst_str = str(Path(layout.instance_dir_str(self._root_str, project, cell, key)))
        return interrupts.interrupt(inst_str, reason)

    def _draft_provenance(
        self, project: str, cell: str, key: str, provenance: Mapping[str, Any]
    ) -> Provenance:
        unknown = provenance_input_errors(provenance)
        if unknown:
            raise StoreError(
                f"unknown provenance field(s) {unknown} for {project}.{cell}; valid: "
                f"{', '.join(PROVENANCE_INPUT_FIELDS)}"
            )
        given = dict(provenance)
        for name, expected in (("project", project), ("cell", cell), ("key", key)):
            if given.pop(name, expected) != expected:
                raise StoreError(
                    f"provenance {name}={provenance[name]!r} disagrees with the ensure() "
                    f"argument {expected!r}"
                )
        try:
            return Provenance(
                project=project,
                cell=cell,
                key=key,
                path=layout.relative_instance_dir(project, cell, key),
                process=process_facts(),
                started_at=utcnow(),
                **given,
            )
        except ValidationError as exc:
            raise StoreError(
                f"invalid provenance for {project}.{cell}@{key[:8]}: {exc}. specs, opts, "
                f"releases and extra must be JSON-able dicts (str keys; no tuples, sets or "
                f"objects); deps maps edge names to logic keys"
            ) from exc

    def _acquire_or_wait(
        self, lease: Lease, project: str, cell: str, key: str, result_str: str
    ) -> tuple[bool, bool]:
        """(acquired, waited): acquired=False means another holder committed while we waited."""
        start = time.monotonic()
        deadline = start + self.wait_timeout_s
        next_log = start
        waited = False
        while True:
            if lease.try_acquire() != "held":
                return True, waited
            waited = True
            if os.path.isdir(result_str):
                return False, True
            now = time.monotonic()
            holder = lease.holder
            who = holder.describe() if holder is not None else "another process"
            if now >= deadline:
                raise LockTimeout(
                    f"timed out after {now - start:.0f}s waiting for {project}.{cell}@{key} "
                    f"held by {who} (last heartbeat "
                    f"{holder.age_s if holder else float('nan'):.1f}s ago, lock "
                    f"{lease.lock_path}). A live heartbeat means it is still computing: raise "
                    f"wait_timeout_s / FURTHER_WAIT_TIMEOUT_SECS (now {self.wait_timeout_s:g}s). "
                    f"If that process is gone, delete {lease.lock_path}."
                )
            if now >= next_log:
                log.info("waiting for %s.%s@%s held by %s", project, cell, key[:8], who)
                next_log = now + WAIT_LOG_EVERY_S
            time.sleep(min(self.poll_s, max(deadline - now, 0.0)))

    # --- listing --------------------------------------------------------------------------
    # Last in the class: a method named `list` shadows the builtin for annotations below it.

    def list(self, project: str | None = None, cell: str | None = None) -> Iterator[StoredKey]:
        """Every committed result under the root, sorted, optionally of one project / cell.

        Scans `<root>/<project>/<cell>/<key>/result`; what is not a valid name or key (the
        `.releases` directory, stray files) is skipped, and so is an instance without a
        committed `result/` (running, failed, crashed or quarantined) and any symlink (the
        store never follows them; `further-dagster verify` reports them).
        """
        if project is not None:
            layout.validate_name(project, "project")
        if cell is not None:
            layout.validate_name(cell, "cell")
        root = self._root_str
        for p in [project] if project is not None else _subdirs(root, is_identifier):
            for c in [cell] if cell is not None else _subdirs(os.path.join(root, p), is_identifier):
                cell_dir = os.path.join(root, p, c)
                for k in _subdirs(cell_dir, layout.is_key):
                    if os.path.isdir(os.path.join(cell_dir, k, layout.RESULT_NAME)):
                        yield StoredKey(p, c, k)


def _subdirs(path: str, valid: Callable[[str], bool]) -> list[str]:
    """Sorted names of the subdirectories of `path` that pass `valid` ([] if there is none)."""
    try:
        with os.scandir(path) as entries:
            return sorted(
                e.name for e in entries if valid(e.name) and e.is_dir(follow_symlinks=False)
            )
    except (FileNotFoundError, NotADirectoryError):
        return []
