"""The artifact store: one directory per logic key, committed atomically, computed once.

`Store` (in `base`) is the interface every store implements and `ArtifactStore` the filesystem
implementation (`ensure`, `is_stored`, `is_intact`, `load`, `quarantine`, `list`, `audit`,
`read_state`, `read_manifest`, `read_provenance`, `reset_failures`, `interrupt`); `Expected`
is what a reader declares about the result it loads (contributions, codec, reading project),
checked with the integrity and trust rules of `integrity`; `ReleaseHistory` keeps the
observed releases of resource instances; `resolve_root` says where the store lives
(`further_dagster.settings.store_root`); `register_codec` adds a file format for a type of
contribution. Records on disk are the pydantic models in `records`; every path comes from
`layout`. This package never imports dagster or submitit.
"""

from __future__ import annotations

from further_dagster.settings import store_root as resolve_root
from further_dagster.store.artifact_store import ArtifactStore
from further_dagster.store.base import Computed, ComputeFn, Expected, Outcome, Store, StoredKey
from further_dagster.store.codecs import Codec, register_codec
from further_dagster.store.reading import Audit
from further_dagster.store.records import Manifest, Provenance, ReleaseObservation, State
from further_dagster.store.release_history import ReleaseHistory

__all__ = [
    "ArtifactStore",
    "Audit",
    "Codec",
    "ComputeFn",
    "Computed",
    "Expected",
    "Manifest",
    "Outcome",
    "Provenance",
    "ReleaseHistory",
    "ReleaseObservation",
    "State",
    "Store",
    "StoredKey",
    "register_codec",
    "resolve_root",
]
