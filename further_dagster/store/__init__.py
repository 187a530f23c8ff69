"""The artifact store: one directory per logic key, committed atomically, computed once.

`ArtifactStore` is the entry point (`ensure`, `is_stored`, `load`, `read_state`,
`read_provenance`); `ReleaseHistory` keeps the observed releases of resource instances;
`resolve_root` says where the store lives; `register_codec` adds a file
format for a type of contribution. Records on disk are the pydantic models in `records`; every
path comes from `layout`. This package never imports dagster or submitit.
"""

from __future__ import annotations

from further_dagster.store.artifact_store import ArtifactStore, Outcome
from further_dagster.store.codecs import Codec, register_codec
from further_dagster.store.records import Manifest, Provenance, ReleaseObservation, State
from further_dagster.store.release_history import ReleaseHistory
from further_dagster.store.root import resolve_root

__all__ = [
    "ArtifactStore",
    "Codec",
    "Manifest",
    "Outcome",
    "Provenance",
    "ReleaseHistory",
    "ReleaseObservation",
    "State",
    "register_codec",
    "resolve_root",
]
