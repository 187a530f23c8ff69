"""Logic keys and structural keys (DESIGN.md section 4).

The logic key of an instance hashes its project, cell, logic_version, resolved Specs (defaults
included, Opts excluded), its dependencies' logic keys, its resolved release (resource cells)
and the versions of the libraries it tracks: nothing else, no run ids, paths, timestamps or
freshness policies. The structural key is the same hash with every release replaced by
`STRUCTURAL_RELEASE` (and the dependencies' structural keys instead of their logic keys): it
stays put when external data changes, so it can name partitions and release histories.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from importlib import metadata
from typing import TYPE_CHECKING, Any

from further_dagster.core.hashing import digest, digest_encoded, encode
from further_dagster.core.params import Specs
from further_dagster.core.versions import DEFAULT_VERSION

if TYPE_CHECKING:
    from further_dagster.core.cell import Cell
    from further_dagster.core.instances import Instance

STRUCTURAL_RELEASE = "<release>"
"""The release a structural key is computed with, in place of the real one."""


@cache
def library_version(name: str) -> str:
    """The installed version of distribution `name`, or "not-installed" (read once)."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not-installed"


def logic_key(
    cell: type[Cell],
    specs: Specs,
    deps: Mapping[str, Instance | tuple[Instance, ...]],
    release: str | None,
    *,
    structural: bool = False,
    dynamic: Mapping[str, str] | None = None,
) -> str:
    """The logic key of `cell` with `specs`, resolved `deps` and `release`.

    Args:
        cell: the cell class (its project, name, logic_version and track_libraries count).
        specs: the resolved Specs (every field, defaults included).
        deps: edge -> dependency instance, or a tuple of them for a swept edge.
        release: the resolved release of a resource cell, None for other cells.
        structural: hash the dependencies' structural keys instead of their logic keys.
        dynamic: edge -> descriptor of a DYN/STUB/RAND edge (resolved when the cell runs), in
            place of a dependency key.

    Returns:
        32 lowercase hex characters.
    """
    attr = "skey" if structural else "key"
    dep_keys = {
        edge: [getattr(d, attr) for d in dep] if isinstance(dep, tuple) else getattr(dep, attr)
        for edge, dep in deps.items()
    }
    if dynamic:
        dep_keys.update(dynamic)
    # This is encode() of the payload dict {"logic_version", "cell", "deps", "specs", "project",
    # "release"?, "libraries"?}, written out in its canonical (sorted-key) order because it is
    # the hot path of every cached lookup; test_keys pins that both spellings agree.
    parts = [
        _key_prefix(cell),
        b"s4:deps",
        encode(dep_keys),
        b"s5:specs",
        encode(specs.__dict__),
        _PROJECT_FIELD,
        encode(cell.project.name),
    ]
    count = 6 if _keyed_version(cell) is not None else 5
    if release is not None:
        parts += [_RELEASE_FIELD, encode(release)]
        count += 1
    if cell.track_libraries:
        parts += [
            b"s9:libraries",
            encode({lib: library_version(lib) for lib in cell.track_libraries}),
        ]
        count += 1
    return digest_encoded(b"d%d{" % count + b"".join(parts) + b"}")


def structural_key(cell: type[Cell], specs: Specs) -> str:
    """The resource instance's key with its release left out: stable across releases, it names
    the instance's release history and its Dagster identity."""
    return logic_key(cell, specs, {}, STRUCTURAL_RELEASE, structural=True)


def release_key(cell: type[Cell], specs: Specs, release: str) -> str:
    """The logic key of the resource instance at `release`."""
    return logic_key(cell, specs, {}, release)


def reference_logic_key(
    cell: type[Cell],
    specs: Specs,
    deps: Mapping[str, Instance | tuple[Instance, ...]],
    release: str | None,
) -> str:
    """The plain-dict spelling of `logic_key`, kept to prove the fast one encodes the same."""
    payload: dict[str, Any] = {
        "project": cell.project.name,
        "cell": cell.name,
        "logic_version": cell.logic_version,
        "specs": dict(specs),
        "deps": {
            edge: [d.key for d in dep] if isinstance(dep, tuple) else dep.key
            for edge, dep in deps.items()
        },
    }
    if _keyed_version(cell) is not None:
        payload["api_version"] = _keyed_version(cell)
    if release is not None:
        payload["release"] = release
    if cell.track_libraries:
        payload["libraries"] = {lib: library_version(lib) for lib in cell.track_libraries}
    return digest(payload)


_PROJECT_FIELD = encode("project")
_RELEASE_FIELD = encode("release")
_PREFIXES: dict[tuple[type[Cell], Any, Any], bytes] = {}


def _key_prefix(cell: type[Cell]) -> bytes:
    """Encoded "logic_version" and "cell" entries, which come first in the sorted payload."""
    slot = (cell, cell.logic_version, cell.api_version)
    found = _PREFIXES.get(slot)
    if found is None:
        found = (
            encode("logic_version")
            + encode(cell.logic_version)
            + encode("cell")
            + encode(cell.name)
        )
        if _keyed_version(cell) is not None:
            # "api_version" sorts before "logic_version" in the canonical encoding
            found = encode("api_version") + encode(_keyed_version(cell)) + found
        _PREFIXES[slot] = found
    return found


def _keyed_version(cell: type[Cell]) -> str | None:
    """The api_version as it enters the key: None (left out) at the default, so the keys of
    cells that never set a version are those of before versions existed."""
    version = str(cell.api_version)
    return None if version == DEFAULT_VERSION else version


__all__ = [
    "STRUCTURAL_RELEASE",
    "library_version",
    "logic_key",
    "reference_logic_key",
    "release_key",
    "structural_key",
]
