"""When the machine, not the cell, fails an attempt: a full disk, a read-only or foreign root.

An `OSError` while the store writes (the instance directory, the lease, the state, the
temporary result, the commit rename) says nothing about the cell's code, so it is recorded as
an `environment` attempt, which does not count toward the maximum number of attempts, and
reaches the caller as a `StoreError` that names the cell, the key, the path and the fix, not a raw
`OSError` (or a codec's advice about pickling).
"""

from __future__ import annotations

import errno
import getpass
import os
from pathlib import Path

from further_dagster.errors import StoreError

_FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
_READ_ONLY = frozenset({errno.EROFS})
_FORBIDDEN = frozenset({errno.EACCES, errno.EPERM})


def os_error_in(exc: BaseException) -> OSError | None:
    """`exc` if it is an `OSError`, else the first `OSError` among its causes and contexts (a
    codec that wrapped a full disk into its own error), else None."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, OSError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # pragma: no cover - a uid without a passwd entry
        return f"uid {os.getuid()}"


def explain(
    exc: OSError, *, label: str, key: str, root: Path, doing: str, path: Path | str | None = None
) -> StoreError:
    """A `StoreError` for `exc`, raised while `doing` (e.g. "committing the result") for the
    instance `label` (`project.cell@key8`) with logic key `key` under store `root`."""
    where = exc.filename if exc.filename is not None else path
    where_text = f" {where}" if where is not None else ""
    code = exc.errno
    if code in _FULL or (code is None and "written" in str(exc)):  # numpy: a short write
        cause = "no space left on the device (or the disk quota is exhausted)"
        fix = (
            f"free space on the filesystem holding {root} (`df -h {root}`), or point "
            f"FURTHER_ROOT / Session(root=...) at a larger disk"
        )
    elif code in _READ_ONLY:
        cause = "the store root is on a read-only filesystem"
        fix = (
            f"remount it read-write, or point FURTHER_ROOT / Session(root=...) at a writable "
            f"directory (stored results of {root} stay readable)"
        )
    elif code in _FORBIDDEN:
        cause = f"user {_user()} may not write there (the store root is read-only for them)"
        fix = (
            f"make {root} writable for this user (chmod u+w, or ask its owner), or point "
            f"FURTHER_ROOT / Session(root=...) at a directory of yours"
        )
    else:
        cause = os.strerror(code) if code is not None else str(exc)
        fix = f"check the filesystem holding {root}"
    return StoreError(
        f"{label} (key {key}): {cause} while {doing}{where_text} ({type(exc).__name__}: "
        f"{exc.strerror or exc}). Nothing was committed, no lock was left behind, and the "
        f"attempt is recorded as 'environment' (it does not count toward max_attempts) where "
        f"the state could still be written. Fix: {fix}; then call again."
    )


__all__ = ["explain", "os_error_in"]
