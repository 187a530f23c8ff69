"""The store interface: what every artifact store implementation provides.

`Store` is a structural protocol (`isinstance(obj, Store)` works at run time, checking the
members exist). `ArtifactStore`, the local-filesystem store, is the one implementation today; a
store backed by the SQL index is the next. Every implementation must pass the one contract suite,
`tests/store/test_contract.py`, which states the promises in executable form:

* `ensure` of a key that is not stored computes it once and commits it; of a stored key, never
  calls `compute`; two threads or processes ensuring one key compute it once;
* `load` returns exactly what `compute` returned (types included: `1`, `1.0`, `True` and `"1"`
  stay distinct), or only the `names` asked for;
* a failing `compute` raises `CellComputeError`, records a `failed` state with the attempt count
  and traceback, and is retried by the next `ensure` until `max_attempts` failures;
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

ComputeFn = Callable[[Path, logging.Logger], Mapping[str, Any]]
"""`compute(tmp_dir, logger) -> {contribution name: value}`; may also write extra files."""


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
        self, project: str, cell: str, key: str, names: Sequence[str] | None = None
    ) -> dict[str, Any]:
        """The stored contributions (all, or only `names`).

        Raises:
            StoreError: the key is not stored.
            CorruptArtifactError: the result is incomplete or unreadable.
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
            LockTimeout: another holder kept a live lease past the wait timeout.
        """
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


__all__ = ["ComputeFn", "Outcome", "Store", "StoredKey"]
