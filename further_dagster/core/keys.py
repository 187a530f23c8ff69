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
    encoded_specs: bytes | None = None,
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
        encoded_specs: `encode(specs.__dict__)` when the caller has it (core/validated.py).

    Returns:
        32 lowercase hex characters.
    """
    if dynamic:
        attr = "skey" if structural else "key"
        dep_keys = {
            edge: [getattr(d, attr) for d in dep] if isinstance(dep, tuple) else getattr(dep, attr)
            for edge, dep in deps.items()
        }
        dep_keys.update(dynamic)
        encoded_deps = encode(dep_keys)
    else:
        encoded_deps = _encode_deps(deps, structural)
    # This is encode() of the payload dict {"logic_version", "cell", "deps", "specs", "project",
    # "release"?, "libraries"?}, written out in its canonical (sorted-key) order because it is
    # the hot path of every cached lookup; test_keys pins that both spellings agree.
    head, tail, count = _key_parts(cell)
    parts = [
        head,
        encoded_deps,
        b"s5:specs",
        encode(specs.__dict__) if encoded_specs is None else encoded_specs,
        tail,
    ]
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
    if cell.project.key_version is not None:
        payload["project_version"] = cell.project.key_version
    if release is not None:
        payload["release"] = release
    if cell.track_libraries:
        payload["libraries"] = {lib: library_version(lib) for lib in cell.track_libraries}
    return digest(payload)


_PROJECT_FIELD = encode("project")
_RELEASE_FIELD = encode("release")
_PARTS: dict[tuple[type[Cell], Any, Any], tuple[bytes, bytes, int]] = {}


def _key_parts(cell: type[Cell]) -> tuple[bytes, bytes, int]:
    """The encoded entries before "deps" ("api_version"?, "logic_version", "project_version"?,
    "cell", then the "deps" name) and after "specs" ("project"), and how many entries there
    are without "release" and "libraries": the same for every instance of the cell."""
    slot = (cell, cell.logic_version, cell.api_version)
    found = _PARTS.get(slot)
    if found is None:
        head = (
            encode("logic_version")
            + encode(cell.logic_version)
            # "project_version" sorts between "logic_version" and "cell"
            + (
                encode("project_version") + encode(cell.project.key_version)
                if cell.project.key_version is not None
                else b""
            )
            + encode("cell")
            + encode(cell.name)
        )
        if _keyed_version(cell) is not None:
            # "api_version" sorts before "logic_version" in the canonical encoding
            head = encode("api_version") + encode(_keyed_version(cell)) + head
        count = 5 + (_keyed_version(cell) is not None) + (cell.project.key_version is not None)
        tail = _PROJECT_FIELD + encode(cell.project.name)
        found = _PARTS[slot] = (head + b"s4:deps", tail, count)
    return found


def _encode_deps(deps: Mapping[str, Instance | tuple[Instance, ...]], structural: bool) -> bytes:
    """`encode({edge: key or [keys]})` of the dependencies' (structural) keys, without the
    intermediate dict."""
    if not deps:
        return b"d0{}"
    if len(deps) == 1:  # the usual case: nothing to sort
        for edge, dep in deps.items():
            if not isinstance(dep, tuple):
                return b"d1{" + encode(edge) + encode(dep.skey if structural else dep.key) + b"}"
    items = []
    for edge, dep in deps.items():
        if isinstance(dep, tuple):
            keys = [d.skey if structural else d.key for d in dep]
            value = b"l%d[" % len(keys) + b"".join([encode(k) for k in keys]) + b"]"
        else:
            value = encode(dep.skey if structural else dep.key)
        items.append((encode(edge), value))
    items.sort()
    return b"d%d{" % len(items) + b"".join([k + v for k, v in items]) + b"}"


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
