"""`ArtifactStore`: compute a logic key's contributions exactly once, store them, load them.

The contract, across threads, processes and hosts sharing a root:

* "stored" means `<instance>/result/` exists, checked with one `stat`; a cached lookup costs a
  few microseconds and takes no lock;
* a result is written into `result.tmp-<uuid>/` and committed by one `os.rename`, so a reader
  sees all of it or nothing, and a crash leaves no `result/`;
* the computer holds a lease (see `lease.py`); others wait for it and then load, and take it
  over if its heartbeat stops (the holder died), so a killed computation is redone once;
* a failing computation is recorded in `state.json` with its traceback and retried on later
  calls until `max_attempts` failures, after which the stored error is raised without running.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

from pydantic import ValidationError

from further_dagster import settings
from further_dagster.core.names import is_identifier
from further_dagster.errors import CorruptArtifactError, LockTimeout, StoreError
from further_dagster.store import layout
from further_dagster.store.attempt import Attempt
from further_dagster.store.base import ComputeFn, Outcome, StoredKey
from further_dagster.store.codecs import decode_file
from further_dagster.store.lease import Lease
from further_dagster.store.provenance import process_facts
from further_dagster.store.records import (
    PROVENANCE_INPUT_FIELDS,
    Manifest,
    Provenance,
    State,
    provenance_input_errors,
    read_record,
    utcnow,
)

log = logging.getLogger("further.store")

WAIT_LOG_EVERY_S = 10.0

# Instance dirs whose lease a thread of this process holds, to refuse re-entrant ensure calls
# (which would otherwise wait on their own lease until the timeout).
_held_by_thread: dict[str, int] = {}


class ArtifactStore:
    """The local-filesystem artifact store rooted at `root`; implements `store.base.Store`.

    Defaults come from `further_dagster.settings`, and explicit arguments are validated by the
    same rules.

    Args:
        root: store root; default `FURTHER_ROOT`, else `<project>/.further`.
        lease_s: lease duration without heartbeat; default `FURTHER_LEASE_SECS` or 60.
        wait_timeout_s: how long to wait for another process's live lease before `LockTimeout`;
            default `FURTHER_WAIT_TIMEOUT_SECS` or 3600.
        poll_s: how often a waiter checks for the result or an expired lease.
        max_attempts: failed attempts after which `ensure` raises the stored error instead of
            running again; default `FURTHER_MAX_ATTEMPTS` or 3.

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
    ) -> None:
        self.root: Path = settings.store_root(root)
        self._root_str = str(self.root)
        self.lease_s = settings.lease_s(lease_s)
        self.wait_timeout_s = settings.wait_timeout_s(wait_timeout_s)
        if poll_s <= 0:
            raise StoreError(f"poll_s={poll_s} must be positive")
        self.poll_s = float(poll_s)
        self.max_attempts = settings.max_attempts(max_attempts)

    def __repr__(self) -> str:
        return f"ArtifactStore(root={self._root_str!r})"

    # --- reading --------------------------------------------------------------------------

    def instance_dir(self, project: str, cell: str, key: str) -> Path:
        """`<root>/<project>/<cell>/<key>` (validated; not created)."""
        return layout.instance_dir(self.root, project, cell, key)

    def is_stored(self, project: str, cell: str, key: str) -> bool:
        """True if the key's result is committed: one `stat` of `<instance>/result`."""
        return os.path.isdir(layout.result_dir_str(self._root_str, project, cell, key))

    def load(
        self, project: str, cell: str, key: str, names: Sequence[str] | None = None
    ) -> dict[str, Any]:
        """Decode the stored contributions (all, or only `names`) into a dict.

        Raises `StoreError` if the key is not stored and `CorruptArtifactError` if the result
        lacks its manifest, a requested contribution or a readable file.
        """
        result = Path(layout.result_dir_str(self._root_str, project, cell, key))
        manifest = self._read_manifest(result, project, cell, key)
        if isinstance(names, str):
            raise StoreError(f"names must be a sequence of names, not the str {names!r}")
        entries = manifest.contributions
        wanted = list(entries) if names is None else list(names)
        missing = [n for n in wanted if n not in entries]
        if missing:
            raise CorruptArtifactError(
                f"{project}.{cell}@{key[:8]}: contribution(s) {missing} are not in {result} "
                f"(stored: {sorted(entries)}); if the cell declares them now, bump its "
                f"logic_version so that a new key is computed"
            )
        return {
            n: decode_file(layout.contribution_path(result, entries[n].file), entries[n].codec)
            for n in wanted
        }

    def read_manifest(self, project: str, cell: str, key: str) -> Manifest:
        """The committed manifest (contribution name -> file and codec)."""
        result = Path(layout.result_dir_str(self._root_str, project, cell, key))
        return self._read_manifest(result, project, cell, key)

    def read_state(self, project: str, cell: str, key: str) -> State | None:
        """The State record, or None if no attempt was ever started for this key."""
        path = layout.state_path(self.instance_dir(project, cell, key))
        try:
            return read_record(path, State)
        except FileNotFoundError:
            return None

    def read_provenance(self, project: str, cell: str, key: str) -> Provenance:
        """The provenance of the committed result (`StoreError` if not stored)."""
        result = Path(layout.result_dir_str(self._root_str, project, cell, key))
        path = layout.provenance_path(result)
        try:
            return read_record(path, Provenance)
        except FileNotFoundError:
            self._raise_missing(result, path, project, cell, key)

    def _read_manifest(self, result: Path, project: str, cell: str, key: str) -> Manifest:
        path = layout.manifest_path(result)
        try:
            return read_record(path, Manifest)
        except FileNotFoundError:
            self._raise_missing(result, path, project, cell, key)

    def _raise_missing(
        self, result: Path, path: Path, project: str, cell: str, key: str
    ) -> NoReturn:
        if not result.is_dir():
            raise StoreError(
                f"{project}.{cell}@{key} is not stored (no {result}); compute it with "
                f"ArtifactStore.ensure first, or check is_stored()"
            ) from None
        raise CorruptArtifactError(
            f"{path} is missing from the committed result {result}; it was modified after "
            f"commit: delete {result} to recompute"
        ) from None

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
        `LockTimeout` if another holder keeps a live lease past `wait_timeout_s`.
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
        inst.mkdir(parents=True, exist_ok=True)
        lease = Lease(inst, lease_s=self.lease_s)
        acquired, waited = self._acquire_or_wait(lease, project, cell, key, result_str)
        if not acquired:
            return Outcome(hit=True, waited=True, key=key, path=inst, duration_s=0.0, attempts=0)
        _held_by_thread[inst_str] = threading.get_ident()
        try:
            if os.path.isdir(result_str):  # committed by someone between our check and lease
                return Outcome(
                    hit=True, waited=waited, key=key, path=inst, duration_s=0.0, attempts=0
                )
            attempt = Attempt(project, cell, key, inst, self.max_attempts)
            done = attempt.run(compute, draft)
            return Outcome(
                hit=False,
                waited=waited,
                key=key,
                path=inst,
                duration_s=done.duration_s,
                attempts=done.attempt,
            )
        finally:
            _held_by_thread.pop(inst_str, None)
            lease.release()

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
        committed `result/` (running, failed or crashed).
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
            return sorted(e.name for e in entries if valid(e.name) and e.is_dir())
    except (FileNotFoundError, NotADirectoryError):
        return []
