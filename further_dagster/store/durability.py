"""`FURTHER_FSYNC=1`: make a commit survive a power loss, at the price of a few disk flushes.

Without fsync, a rename is atomic for every process that reads the store, but the kernel may
write the directory entry to disk before the file data: after a power loss (not a process
crash) a committed `result/` can hold truncated or empty files, which the manifest's sizes and
digests then detect on load. With fsync, every file of a result and the temporary directory are
flushed before the commit rename, and the instance directory after it, so a result that is
visible after a reboot is whole. The price is one flush per file plus two per commit: a few
milliseconds on an SSD, tens on a network filesystem, per computed instance (never on a hit).
"""

from __future__ import annotations

import os
from pathlib import Path


def fsync_file(path: str | os.PathLike[str]) -> None:
    """Flush one file's data and metadata to disk (opened read-only: works on any file we own)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Flush a directory's entries (the names created, renamed or removed in it) to disk."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """Flush every regular file under `root`, then every directory bottom-up, `root` last."""
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames:
            full = os.path.join(dirpath, name)
            if not os.path.islink(full):
                fsync_file(full)
        fsync_dir(dirpath)
        del dirnames  # walked bottom-up: subdirectories were flushed already
