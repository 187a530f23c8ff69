"""Is a committed result intact, and may its files be read? The checks behind every load.

A result is trusted only when it is exactly what was committed:

* the instance directory and its `result/` are real directories (`lstat`: a symlink is
  refused, never followed; before writing, the store also checks the project and cell
  directories), and every file is opened with `O_NOFOLLOW`;
* the manifest is a valid record, and each entry is consistent: its codec is registered, its
  file is `<contribution name><codec suffix>` (a plain name in `result/`: a `.json` file
  relabelled `pickle` is refused before anything is read), and, when the reader says what it
  expects (`Expected`), the names are exactly the declared contributions, each codec can
  produce the declared type and is the cell's declared codec if it has one;
* each file has the size the manifest recorded and, unless the store verifies sizes only, the
  recorded blake2b digest. Manifests written before sizes and digests were recorded (both
  None) get every other check.

Trust is checked before a file whose codec runs code (pickle) is read: the instance directory,
the result directory and the file must be owned by the current user and writable by nobody
else, unless the store is shared; and a pickle of another project read as a cell's input needs
that project to be trusted (see `ArtifactStore`).

This module only reads; moving a damaged result aside is `ArtifactStore.quarantine`.
"""

from __future__ import annotations

import functools
import grp
import os
import pwd
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from further_dagster.core.cell import type_can_pass
from further_dagster.errors import CorruptArtifactError, InvalidNameError, StoreError
from further_dagster.store import layout
from further_dagster.store.base import Expected
from further_dagster.store.codecs import Codec, bytes_digest, codec_by_name, file_digest
from further_dagster.store.records import Manifest, ManifestEntry, open_nofollow

SMALL_FILE = 4 << 20
"""Files up to this size are read into memory once, verified and decoded from those bytes;
larger ones are hashed in chunks and then decoded from the start of the same descriptor."""


@dataclass(frozen=True, slots=True)
class ResultDir:
    """A committed result directory, checked to be real, with the stats trust is judged by."""

    path: Path
    inst: os.stat_result
    result: os.stat_result


def symlink_error(path: str | Path) -> StoreError:
    return StoreError(
        f"{path} is a symlink; the store never follows symlinks inside its root (a link there "
        f"would read or write files outside it). Remove the link (its target is untouched) "
        f"and call again"
    )


def real_dir(path: str) -> os.stat_result | None:
    """`lstat(path)` if it is a real directory, None if it does not exist.

    Raises:
        StoreError: `path` is a symlink (or not a directory: then its parent was tampered with).
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(st.st_mode):
        raise symlink_error(path)
    if not stat.S_ISDIR(st.st_mode):
        raise StoreError(f"{path} is not a directory; remove it and call again")
    return st


def check_instance_dirs(root: str, project: str, cell: str, key: str) -> None:
    """Refuse a symlink at `<root>/<project>`, its cell directory or the instance directory
    (what exists of them), before the store writes under them."""
    inst = layout.instance_dir_str(root, project, cell, key)
    cell_dir = os.path.dirname(inst)
    for path in (os.path.dirname(cell_dir), cell_dir, inst):
        if real_dir(path) is None:
            return


def result_dir(root: str, project: str, cell: str, key: str) -> ResultDir:
    """The committed `result/` of an instance, it and the instance directory checked to be real
    (two `lstat`s: a load's share; writers also check the project and cell directories).

    Raises:
        StoreError: not stored, or a symlink at the instance or result directory.
    """
    inst = layout.instance_dir_str(root, project, cell, key)
    inst_st = real_dir(inst)
    result = inst + os.sep + layout.RESULT_NAME
    result_st = real_dir(result) if inst_st is not None else None
    if inst_st is None or result_st is None:
        raise StoreError(
            f"{project}.{cell}@{key} is not stored (no {result}); compute it with "
            f"ArtifactStore.ensure first, or check is_stored()"
        )
    return ResultDir(Path(result), inst_st, result_st)


# --- the manifest -------------------------------------------------------------------------


def entry_problem(name: str, entry: ManifestEntry, expect: Expected | None) -> str | None:
    """What is inconsistent about one manifest entry, or None.

    Raises:
        CodecError: the entry's codec is not registered in this process. That is no damage
            (the module registering it was not imported), so it is not reported as one.
    """
    codec = codec_by_name(entry.codec)
    try:
        wanted = layout.contribution_file_name(name, codec.suffix)
    except (StoreError, InvalidNameError) as exc:  # a name that could leave result/
        return f"manifest entry {name!r} is not a valid contribution: {exc}"
    if entry.file != wanted:
        return (
            f"manifest entry {name!r} names file {entry.file!r} with codec {entry.codec!r}; "
            f"that codec writes {wanted!r} (the file was relabelled or the entry edited)"
        )
    if expect is None:
        return None
    if expect.codec is not None and entry.codec != expect.codec:
        return (
            f"contribution {name!r} is stored with codec {entry.codec!r}, but the cell declares "
            f"codec = {expect.codec!r}"
        )
    declared = expect.contributions.get(name) if expect.contributions is not None else None
    if declared is not None and not codec_can_hold(codec, declared):
        return (
            f"contribution {name!r} is stored with codec {entry.codec!r}, which cannot hold its "
            f"declared type {getattr(declared, '__name__', declared)}"
        )
    return None


def unregistered_entry_problem(name: str, entry: ManifestEntry) -> str | None:
    """The checks an entry whose codec is not registered here still gets: a plain file name
    that starts with the contribution's name."""
    base = os.path.basename(entry.file)
    if base != entry.file or not entry.file.startswith(f"{name}."):
        return f"manifest entry {name!r} names file {entry.file!r}, not {name}.<suffix>"
    return None


def codec_can_hold(codec: Codec, declared: object) -> bool:
    """True if some value `codec` reads back could pass the declared type's check."""
    kinds = codec.output_types()
    return kinds is None or any(type_can_pass(kind, declared) for kind in kinds)


def names_problem(manifest: Manifest, expect: Expected | None) -> str | None:
    """Whether the manifest lists exactly the declared contributions (if `expect` has them)."""
    if expect is None or expect.contributions is None:
        return None
    stored, declared = set(manifest.contributions), set(expect.contributions)
    if stored == declared:
        return None
    parts = []
    if declared - stored:
        parts.append(f"lacks declared contribution(s) {sorted(declared - stored)}")
    if stored - declared:
        parts.append(f"has undeclared contribution(s) {sorted(stored - declared)}")
    return (
        f"the manifest {' and '.join(parts)} (stored: {sorted(stored)}); an entry was dropped "
        f"or added after commit, or the cell's contributions changed without a logic_version "
        f"bump"
    )


def size_problem(entry: ManifestEntry, size: int) -> str | None:
    if entry.size is not None and size != entry.size:
        return f"{entry.file} has {size} bytes, the manifest recorded {entry.size}"
    return None


def digest_problem(entry: ManifestEntry, digest: str) -> str | None:
    if entry.blake2b is not None and digest != entry.blake2b:
        return (
            f"{entry.file}'s blake2b digest is {digest[:16]}..., the manifest recorded "
            f"{entry.blake2b[:16]}... (its bytes changed after commit)"
        )
    return None


# --- files --------------------------------------------------------------------------------


def open_file(path: Path) -> tuple[IO[bytes], os.stat_result] | None:
    """The regular file `path` opened without following a symlink, and its fstat; None if it
    does not exist.

    Raises:
        StoreError: `path` is a symlink.
        CorruptArtifactError: `path` is not a regular file.
    """
    try:
        fd = open_nofollow(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    fh = os.fdopen(fd, "rb")
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        fh.close()
        raise CorruptArtifactError(f"{path} is not a regular file")
    return fh, st


def file_state(path: Path) -> os.stat_result | None:
    """`lstat` of a contribution file: None if missing; a symlink is refused."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(st.st_mode):
        raise symlink_error(path)
    return st


def verified_bytes(
    fh: IO[bytes], st: os.stat_result, entry: ManifestEntry, digest: bool
) -> tuple[bytes | None, str | None]:
    """(the file's bytes if it is small, the first problem found) after the size and, if
    `digest`, the digest check. For a large file the bytes are None and `fh` is rewound."""
    problem = size_problem(entry, st.st_size)
    if problem is not None:
        return None, problem
    if st.st_size <= SMALL_FILE:
        data = fh.read()
        if digest and entry.blake2b is not None:
            return data, digest_problem(entry, bytes_digest(data))
        return data, None
    if digest and entry.blake2b is not None:
        found = file_digest(fh)
        fh.seek(0)
        return None, digest_problem(entry, found)
    return None, None


# --- trust --------------------------------------------------------------------------------


@functools.cache
def _private_group(gid: int) -> bool:
    """True for the current user's own private group (named like the user, no other member):
    group write through it is write by the user alone (the `umask 002` of user-private-group
    systems such as Debian and Ubuntu)."""
    if gid != os.getegid():
        return False
    try:
        user = pwd.getpwuid(os.geteuid()).pw_name
        group = grp.getgrgid(gid)
    except KeyError:
        return False
    return group.gr_name == user and set(group.gr_mem) <= {user}


def writable_by_others(st: os.stat_result) -> str | None:
    """Why another user could have written what `st` describes, or None."""
    uid = os.geteuid()
    if st.st_uid != uid:
        return f"is owned by uid {st.st_uid}, not by you (uid {uid})"
    if st.st_mode & stat.S_IWOTH:
        return f"is world-writable (mode {stat.S_IMODE(st.st_mode):o})"
    if st.st_mode & stat.S_IWGRP and not _private_group(st.st_gid):
        return (
            f"is writable by group {st.st_gid} (mode {stat.S_IMODE(st.st_mode):o}), which "
            f"others belong to"
        )
    return None


def iter_instance_dirs(root: str, project: str | None, cell: str | None) -> Iterator[Path]:
    """Every `<root>/<project>/<cell>/<key>` entry that looks like an instance directory,
    symlinks included (for `further-dagster verify`, which reports them)."""
    from further_dagster.core.names import is_identifier

    def names(path: str) -> list[str]:
        try:
            return sorted(os.listdir(path))
        except (FileNotFoundError, NotADirectoryError):
            return []

    for p in [project] if project is not None else names(root):
        if not is_identifier(p):
            continue
        for c in [cell] if cell is not None else names(os.path.join(root, p)):
            if not is_identifier(c):
                continue
            for k in names(os.path.join(root, p, c)):
                if layout.is_key(k):
                    yield Path(root, p, c, k)


__all__ = [
    "SMALL_FILE",
    "ResultDir",
    "check_instance_dirs",
    "codec_can_hold",
    "digest_problem",
    "entry_problem",
    "file_state",
    "iter_instance_dirs",
    "names_problem",
    "open_file",
    "real_dir",
    "result_dir",
    "size_problem",
    "verified_bytes",
    "writable_by_others",
]
