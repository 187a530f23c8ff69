"""The store interface: what every artifact store implementation provides.

`Store` is a structural protocol (`isinstance(obj, Store)` works at run time, checking the
members exist). `ArtifactStore`, the local-filesystem store, is the one implementation today; a
store backed by the SQL index is the next. Every implementation must pass the one contract suite,
`tests/store/test_contract.py`, which states the promises in executable form:

* `ensure` of a key that is not stored computes it once and commits it; of a stored key, never
  calls `compute`; two threads or processes ensuring one key compute it once;
* `load` returns exactly what `compute` returned (types included: `1`, `1.0`, `True` and `"1"`
  stay distinct), or only the `names` asked for; or raises: a result that is not intact (a
  file changed, truncated, missing or relabelled, a manifest entry dropped or edited) is a
  `CorruptArtifactError` naming the cell, key and file, never wrong data, and a pickle it
  does not trust is an `UntrustedPickleError`;
* `is_intact` is False for such a result (a cheap check: manifest, files, sizes), and
  `quarantine` moves it aside (kept, never deleted) so that it is no longer stored and the
  next `ensure` computes it again;
* a failing `compute` raises `CellComputeError`, records a `failed` state with the attempt count
  and traceback, and is retried by the next `ensure` until `max_attempts` failures;
  `reset_failures` retries a refused key; a `ContributionError` reaches the caller as itself
  and refuses the key at once (it is deterministic); `KeyboardInterrupt` is recorded as
  `interrupted`, an `InputLoadError` as `environment`, and neither counts;
* state, manifest and provenance are readable once committed, and `list` shows exactly the
  committed keys;
* reading a key that is not stored raises `StoreError`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from further_dagster.store.records import Manifest, Provenance, State

ComputeFn = Callable[[Path, logging.Logger], "Mapping[str, Any] | Computed"]
"""`compute(tmp_dir, logger) -> {contribution name: value}` (or a `Computed`); may also write
extra files."""


@dataclass(frozen=True, slots=True)
class Computed:
    """A compute function's values with JSON-able facts for the provenance's `extra` (known
    only once compute ran: the children a DYN/STUB edge called, the RAND values drawn)."""

    values: Mapping[str, Any]
    extra: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What `ensure` did.

    `hit`: the result was already stored (or committed by another process while we waited);
    `waited`: another holder's lease made us wait; `path`: the instance directory;
    `duration_s`: time spent computing and committing (0 on a hit); `attempts`: the attempt
    number this call ran (0 on a hit, since no attempt was made).
    """

    hit: bool
    waited: bool
    key: str
    path: Path
    duration_s: float
    attempts: int


@dataclass(frozen=True, slots=True, order=True)
class StoredKey:
    """One committed result, as `Store.list` reports it."""

    project: str
    cell: str
    key: str


@dataclass(frozen=True, slots=True)
class Expected:
    """What the reader of a result knows about it, checked before anything is decoded.

    Attributes:
        contributions: the declared contributions (name -> type, as `Cell.contributions`): the
            manifest must list exactly these names, and each file's codec must be able to
            produce its declared type. None: not checked (any stored names).
        codec: the one codec the cell allows (`Cell.codec`); a file of another codec is
            refused. None: any registered codec.
        reader: the project of the cell that reads this result as one of its inputs. A pickled
            contribution of a different project is unpickled only if the store trusts that
            project (`ArtifactStore(trust=...)`, `Session(trust=...)`,
            `build_definitions(trust=...)`). None: the caller reads the result it asked for
            (a Session's result, an IO manager's input), which is never "external".
    """

    contributions: Mapping[str, Any] | None = None
    codec: str | None = None
    reader: str | None = None


@runtime_checkable
class Store(Protocol):
    """An artifact store: computes each (project, cell, logic key) at most once, keeps it.

    Names are plain identifiers and keys 32 lowercase hex characters; anything else raises
    `InvalidNameError` / `StoreError` before the store is touched.
    """

    @property
    def root(self) -> Path:
        """The directory the store's files live under."""
        ...

    def instance_dir(self, project: str, cell: str, key: str) -> Path:
        """The directory of one instance (state, log, lease and committed result)."""
        ...

    def is_stored(self, project: str, cell: str, key: str) -> bool:
        """True if the key's result is committed (a cheap lookup, no lock)."""
        ...

    def load(
        self,
        project: str,
        cell: str,
        key: str,
        names: Sequence[str] | None = None,
        *,
        expect: Expected | None = None,
    ) -> dict[str, Any]:
        """The stored contributions (all, or only `names`), checked against what was committed
        (manifest, sizes, digests) and against `expect` before they are decoded.

        Raises:
            StoreError: the key is not stored, or a path in it is a symlink.
            CorruptArtifactError: the result is damaged, incomplete or unreadable (the message
                names the cell, key and file).
            UntrustedPickleError: a pickled contribution the store does not trust.
        """
        ...

    def is_intact(
        self, project: str, cell: str, key: str, *, expect: Expected | None = None
    ) -> bool:
        """True if the key is stored and passes the cheap checks: its manifest is readable and
        consistent (with `expect` too), and every file is present with its recorded size. No
        file is read, so no digest is compared: `load` does that."""
        ...

    def quarantine(self, project: str, cell: str, key: str, reason: str) -> Path | None:
        """Move a damaged committed result aside (kept, with `reason`), so that the key is no
        longer stored and the next `ensure` computes it. Returns where it went, or None if
        there was no committed result (someone else moved it first).

        Raises:
            StoreError: a path of the instance is a symlink (nothing is moved).
        """
        ...

    def ensure(
        self,
        project: str,
        cell: str,
        key: str,
        compute: ComputeFn,
        provenance: Mapping[str, Any],
    ) -> Outcome:
        """Make sure the key is stored, computing it under a lease and committing it if not.

        Raises:
            CellComputeError: compute raised (now, or `max_attempts` times before).
            ContributionError: compute returned wrong contributions (now, or before: refused
                until `reset_failures`).
            LockTimeout: another holder kept a live lease past the wait timeout.
            StoreError: the store cannot be written (disk full, read-only root), naming the
                cell, key, path and fix.
        """
        ...

    def reset_failures(self, project: str, cell: str, key: str) -> State | None:
        """Retry a refused key: reset its counted failures so that the next `ensure` runs it;
        the new state (None if there was no failed state to reset)."""
        ...

    def interrupt(self, project: str, cell: str, key: str, reason: str = "interrupted") -> bool:
        """Record the attempt a thread of this process runs for the key as `interrupted`,
        release its lease, and discard what its compute returns; False if there is none."""
        ...

    def read_state(self, project: str, cell: str, key: str) -> State | None:
        """The latest attempt's State record, or None if no attempt ever started."""
        ...

    def read_manifest(self, project: str, cell: str, key: str) -> Manifest:
        """The committed result's manifest (`StoreError` if not stored)."""
        ...

    def read_provenance(self, project: str, cell: str, key: str) -> Provenance:
        """The committed result's provenance (`StoreError` if not stored)."""
        ...

    def list(self, project: str | None = None, cell: str | None = None) -> Iterator[StoredKey]:
        """Every committed result, optionally only those of one project and/or cell."""
        ...


__all__ = ["ComputeFn", "Expected", "Outcome", "Store", "StoredKey"]
