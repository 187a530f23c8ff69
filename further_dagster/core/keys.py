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
) -> str:
    """The logic key of `cell` with `specs`, resolved `deps` and `release`.

    Args:
        cell: the cell class (its project, name, logic_version and track_libraries count).
        specs: the resolved Specs (every field, defaults included).
        deps: edge -> dependency instance, or a tuple of them for a swept edge.
        release: the resolved release of a resource cell, None for other cells.
        structural: hash the dependencies' structural keys instead of their logic keys.

    Returns:
        32 lowercase hex characters.
    """
    attr = "skey" if structural else "key"
    dep_keys = {
        edge: [getattr(d, attr) for d in dep] if isinstance(dep, tuple) else getattr(dep, attr)
        for edge, dep in deps.items()
    }
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
    count = 5
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
    if release is not None:
        payload["release"] = release
    if cell.track_libraries:
        payload["libraries"] = {lib: library_version(lib) for lib in cell.track_libraries}
    return digest(payload)


_PROJECT_FIELD = encode("project")
_RELEASE_FIELD = encode("release")
_PREFIXES: dict[tuple[type[Cell], Any], bytes] = {}


def _key_prefix(cell: type[Cell]) -> bytes:
    """Encoded "logic_version" and "cell" entries, which come first in the sorted payload."""
    found = _PREFIXES.get((cell, cell.logic_version))
    if found is None:
        found = (
            encode("logic_version")
            + encode(cell.logic_version)
            + encode("cell")
            + encode(cell.name)
        )
        _PREFIXES[(cell, cell.logic_version)] = found
    return found


__all__ = [
    "STRUCTURAL_RELEASE",
    "library_version",
    "logic_key",
    "reference_logic_key",
    "release_key",
    "structural_key",
]
