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
import datetime as dt
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from pydantic import ValidationError

from further_dagster import settings
from further_dagster.core.names import is_identifier
from further_dagster.errors import (
    CodecError,
    CorruptArtifactError,
    LockTimeout,
    StoreError,
    UntrustedPickleError,
)
from further_dagster.store import environment, integrity, interrupts, layout
from further_dagster.store.attempt import Attempt
from further_dagster.store.base import ComputeFn, Expected, Outcome, StoredKey
from further_dagster.store.codecs import (
    JsonCodec,
    codec_by_name,
    file_digest,
    read_bytes_with,
    read_with,
)
from further_dagster.store.integrity import ResultDir
from further_dagster.store.lease import Lease
from further_dagster.store.provenance import process_facts
from further_dagster.store.records import (
    PROVENANCE_INPUT_FIELDS,
    Manifest,
    ManifestEntry,
    Provenance,
    QuarantineRecord,
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


@dataclass(frozen=True, slots=True)
class Audit:
    """One committed result as `ArtifactStore.audit` (and `further-dagster verify`) found it.

    `problem` is None when it is intact; `unverified` lists the contributions whose manifest
    entry records no digest (committed before digests were recorded).
    """

    project: str
    cell: str
    key: str
    problem: str | None
    unverified: list[str]

    @property
    def label(self) -> str:
        return f"{self.project}.{self.cell}@{self.key}"


def _trusted(projects: Iterable[str], what: str) -> frozenset[str]:
    if isinstance(projects, str):
        raise StoreError(f"{what} must be a list of project names, not the str {projects!r}")
    return frozenset(layout.validate_name(p, "project") for p in projects)


def _new_damaged_dir(inst: Path) -> Path:
    """A fresh `<instance>/damaged-<utc stamp>` directory (a suffix if the stamp is taken)."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    for n in range(1000):
        damaged = layout.damaged_dir(inst, stamp if n == 0 else f"{stamp}-{n}")
        try:
            damaged.mkdir()
        except FileExistsError:
            continue
        return damaged
    raise StoreError(f"cannot create a damaged-{stamp} directory in {inst}")


class ArtifactStore:
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

    def load(
        self,
        project: str,
        cell: str,
        key: str,
        names: Sequence[str] | None = None,
        *,
        expect: Expected | None = None,
    ) -> dict[str, Any]:
        """Decode the stored contributions (all, or only `names`) into a dict, after checking
        them (see `store.integrity`): real directories, a consistent manifest (and `expect`),
        sizes and, with `verify="digest"`, digests; pickles only where trusted.

        Raises:
            StoreError: the key is not stored, or a path of it is a symlink.
            CorruptArtifactError: the result is damaged (naming cell, key and file); move it
                aside with `quarantine` (the engine does) and the next call recomputes it.
            UntrustedPickleError: a pickle the store does not trust (naming the fix).
        """
        if isinstance(names, str):
            raise StoreError(f"names must be a sequence of names, not the str {names!r}")
        where = integrity.result_dir(self._root_str, project, cell, key)
        manifest = self._read_manifest(where.path, project, cell, key)
        entries = manifest.contributions
        problem = integrity.names_problem(manifest, expect)
        if problem is not None:
            self._corrupt(project, cell, key, layout.manifest_path(where.path), problem)
        wanted = list(entries) if names is None else list(names)
        missing = [n for n in wanted if n not in entries]
        if missing:
            raise CorruptArtifactError(
                f"{project}.{cell}@{key}: contribution(s) {missing} are not in {where.path} "
                f"(stored: {sorted(entries)}); if the cell declares them now, bump its "
                f"logic_version so that a new key is computed"
            )
        return {
            n: self._read_entry(where, project, cell, key, n, entries[n], expect) for n in wanted
        }

    def _read_entry(
        self,
        where: ResultDir,
        project: str,
        cell: str,
        key: str,
        name: str,
        entry: ManifestEntry,
        expect: Expected | None,
    ) -> Any:
        problem = integrity.entry_problem(name, entry, expect)
        if problem is not None:
            self._corrupt(project, cell, key, layout.manifest_path(where.path), problem)
        path = where.path / entry.file
        codec = codec_by_name(entry.codec)
        if codec.runs_code:
            self._check_reader_trusted(project, cell, key, name, path, expect)
        opened = integrity.open_file(path)
        if opened is None:
            self._corrupt(project, cell, key, path, f"{entry.file} is missing")
        fh, st = opened
        with fh:
            if codec.runs_code and not self.shared:
                self._check_owner(project, cell, key, where, path, st)
            digest = self.verify == "digest"
            data, problem = integrity.verified_bytes(fh, st, entry, digest)
            if problem is not None:
                self._corrupt(project, cell, key, path, problem)
            try:
                if data is not None:
                    return read_bytes_with(codec, data, path)
                return read_with(codec, fh, path)
            except CorruptArtifactError as exc:
                if digest and entry.blake2b is not None and not isinstance(codec, JsonCodec):
                    # the committed bytes, which this process's numpy/pyarrow/classes cannot
                    # read: not damage (JSON is read the same everywhere, so it has no excuse)
                    raise CodecError(
                        f"{project}.{cell}@{key}: {path} is intact (its digest matches) but "
                        f"cannot be decoded here: {exc}. The library that wrote it may differ "
                        f"from this process's (its version is in provenance.json)"
                    ) from exc
                self._corrupt(project, cell, key, path, str(exc))

    def _check_reader_trusted(
        self, project: str, cell: str, key: str, name: str, path: Path, expect: Expected | None
    ) -> None:
        reader = expect.reader if expect is not None else None
        if reader is None or reader == project or project in self.trust:
            return
        raise UntrustedPickleError(
            f"{project}.{cell}@{key}: contribution {name!r} ({path}) is a pickle of project "
            f"{project!r}, read as an input of a cell of project {reader!r}, which does not "
            f"trust {project!r}: unpickling runs code the file carries. If you trust "
            f"{project!r}'s results, declare it: Session(trust=[{project!r}]) or "
            f"build_definitions(..., trust=[{project!r}]) (ArtifactStore(trust=[...]) for a "
            f"store of your own); or give {project}.{cell} a codec that is not pickle "
            f"(codec = 'json' | 'npy' | 'parquet')"
        )

    def _check_owner(
        self,
        project: str,
        cell: str,
        key: str,
        where: ResultDir,
        path: Path,
        st: os.stat_result,
    ) -> None:
        inst = where.path.parent
        for what, info in ((inst, where.inst), (where.path, where.result), (path, st)):
            why = integrity.writable_by_others(info)
            if why is not None:
                raise UntrustedPickleError(
                    f"{project}.{cell}@{key}: refusing to unpickle {path}: {what} {why}, so "
                    f"another user could have written it, and unpickling runs code the file "
                    f"carries. If the root {self.root} is shared on purpose, set "
                    f"{settings.ENV_SHARED_STORE}=1 (ArtifactStore(shared=True)); otherwise "
                    f"use a root of your own (FURTHER_ROOT), or move {inst} away and recompute"
                )

    def _corrupt(self, project: str, cell: str, key: str, path: Path, problem: str) -> NoReturn:
        raise CorruptArtifactError(
            f"{project}.{cell}@{key} is damaged: {problem} ({path}). Nothing of it was "
            f"returned; move it aside with quarantine() or `further-dagster verify "
            f"--quarantine` (a Session or a Dagster step does so itself) and the next call "
            f"recomputes it"
        )

    def is_intact(
        self, project: str, cell: str, key: str, *, expect: Expected | None = None
    ) -> bool:
        """True if the key is stored and passes the cheap checks (real directories, a readable
        and consistent manifest, every file present with its recorded size; no file is read).
        A symlink on the way is not intact."""
        try:
            return self._problem(project, cell, key, expect, digest=False) is None
        except StoreError:
            return False

    def audit(self, project: str, cell: str, key: str, *, digest: bool = True) -> Audit:
        """What `further-dagster verify` reports for one committed result: its first problem
        (None if intact; digests compared when `digest`), and the contributions whose size or
        digest the manifest does not record (committed before they were)."""
        manifest: Manifest | None = None
        try:
            problem = self._problem(project, cell, key, None, digest=digest)
            manifest = self.read_manifest(project, cell, key) if problem is None else None
        except StoreError as exc:
            problem = str(exc)
        unverified = (
            sorted(n for n, e in manifest.contributions.items() if e.blake2b is None)
            if manifest is not None
            else []
        )
        return Audit(project, cell, key, problem, unverified)

    def _problem(
        self, project: str, cell: str, key: str, expect: Expected | None, *, digest: bool
    ) -> str | None:
        where = integrity.result_dir(self._root_str, project, cell, key)
        try:
            manifest = self._read_manifest(where.path, project, cell, key)
        except CorruptArtifactError as exc:
            return str(exc)
        problem = integrity.names_problem(manifest, expect)
        if problem is not None:
            return problem
        for name, entry in manifest.contributions.items():
            try:
                problem = integrity.entry_problem(name, entry, expect)
            except CodecError:  # not registered here: no damage, checked as far as possible
                problem = integrity.unregistered_entry_problem(name, entry)
            if problem is not None:
                return problem
            path = where.path / entry.file
            if not digest:
                st = integrity.file_state(path)
                if st is None:
                    return f"{entry.file} is missing"
                problem = integrity.size_problem(entry, st.st_size)
                if problem is not None:
                    return problem
                continue
            opened = integrity.open_file(path)
            if opened is None:
                return f"{entry.file} is missing"
            fh, st = opened
            with fh:
                problem = integrity.size_problem(entry, st.st_size)
                if problem is None and entry.blake2b is not None:
                    problem = integrity.digest_problem(entry, file_digest(fh))
            if problem is not None:
                return problem
        return None

    def quarantine(self, project: str, cell: str, key: str, reason: str) -> Path | None:
        """Move `<instance>/result` to `<instance>/damaged-<utc stamp>/result`, with
        `reason.json` beside it (the reason given and what the store's own checks find), so
        the key is no longer stored and the next `ensure` computes it again. Nothing is
        deleted. Returns the `damaged-*` directory, or None if no result was committed (another
        process moved it first).

        Raises:
            StoreError: a directory of the instance is a symlink (nothing is moved).
        """
        integrity.check_instance_dirs(self._root_str, project, cell, key)
        inst = self.instance_dir(project, cell, key)
        result = layout.result_dir(inst)
        if integrity.real_dir(str(result)) is None:
            return None
        try:
            found = self._problem(project, cell, key, None, digest=self.verify == "digest")
        except StoreError as exc:
            found = str(exc)
        damaged = _new_damaged_dir(inst)
        try:
            os.rename(result, layout.result_dir(damaged))
        except FileNotFoundError:
            os.rmdir(damaged)
            return None
        facts = process_facts()
        write_record(
            layout.reason_path(damaged),
            QuarantineRecord(
                project=project,
                cell=cell,
                key=key,
                reason=reason,
                found=found,
                moved_at=utcnow(),
                host=facts.hostname,
                pid=facts.pid,
                user=facts.user,
            ),
        )
        log.warning(
            "%s.%s@%s: damaged result moved aside to %s (%s); the next call recomputes it",
            project,
            cell,
            key[:8],
            damaged,
            reason,
        )
        return damaged

    def read_manifest(self, project: str, cell: str, key: str) -> Manifest:
        """The committed manifest (contribution name -> file, codec, size and digest)."""
        where = integrity.result_dir(self._root_str, project, cell, key)
        return self._read_manifest(where.path, project, cell, key)

    def read_state(self, project: str, cell: str, key: str) -> State | None:
        """The State record, or None if no attempt was ever started for this key."""
        path = layout.state_path(self.instance_dir(project, cell, key))
        try:
            return read_record(path, State)
        except FileNotFoundError:
            return None

    def read_provenance(self, project: str, cell: str, key: str) -> Provenance:
        """The provenance of the committed result (`StoreError` if not stored)."""
        where = integrity.result_dir(self._root_str, project, cell, key)
        path = layout.provenance_path(where.path)
        try:
            return read_record(path, Provenance)
        except FileNotFoundError:
            self._raise_missing(where.path, path, project, cell, key)

    def _read_manifest(self, result: Path, project: str, cell: str, key: str) -> Manifest:
        path = layout.manifest_path(result)
        try:
            return read_record(path, Manifest)
        except FileNotFoundError:
            self._raise_missing(result, path, project, cell, key)
        except CorruptArtifactError as exc:
            self._corrupt(project, cell, key, path, f"unreadable manifest: {exc}")

    def _raise_missing(
        self, result: Path, path: Path, project: str, cell: str, key: str
    ) -> NoReturn:
        if not result.is_dir():
            raise StoreError(
                f"{project}.{cell}@{key} is not stored (no {result}); compute it with "
                f"ArtifactStore.ensure first, or check is_stored()"
            ) from None
        self._corrupt(project, cell, key, path, f"{path.name} is missing")

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
            )
            done = attempt.run(compute, draft)
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
