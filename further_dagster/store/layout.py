"""Every path of the artifact store, as pure functions.

This module is the only place that knows where things live on disk, so a change of layout is a
change to one file. Nothing here touches the filesystem: callers stat, read and write.

```
<root>/<project>/<cell>/<key>/      instance directory (key = 32 lowercase hex chars)
    lock                            lease file (JSON holder record; heartbeat = its mtime)
    lock.guard                      flock guard held for microseconds around lease changes
    state.json                      State record, rewritten atomically
    cell.log                        the cell's log (appended by every attempt)
    result.tmp-<uuid>/              an attempt's result being written
    result/                         committed: one file per contribution + manifest.json +
                                    provenance.json
    damaged-<utc stamp>/            a committed result found damaged, moved aside (never
        result/                     deleted): the result as it was found, and why it was
        reason.json                 moved (QuarantineRecord)
<root>/.releases/<project>/<cell>/<skey>.jsonl
                                    observed releases of one resource instance (skey = its
                                    structural key, stable across releases), one JSON line each
                                    time the release changes
<root>/.releases/<project>/<cell>/<skey>.last.json
                                    the latest observation (LastSeen), rewritten atomically
```

Names are validated before any path is built: a project, cell or contribution name must be a
plain identifier and a key must be 32 lowercase hex characters, so no value can contain a
separator, `..` or an absolute path and escape the root.
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path

from further_dagster.core.names import STORE_RECORD_NAMES, check_identifier, is_identifier
from further_dagster.errors import InvalidNameError, StoreError

_KEY = re.compile(r"[0-9a-f]{32}")

LOCK_NAME = "lock"
GUARD_NAME = "lock.guard"
STATE_NAME = "state.json"
LOG_NAME = "cell.log"
RESULT_NAME = "result"
RESULT_TMP_PREFIX = "result.tmp-"
MANIFEST_NAME = "manifest.json"
PROVENANCE_NAME = "provenance.json"
DAMAGED_PREFIX = "damaged-"
REASON_NAME = "reason.json"
RELEASES_DIR = ".releases"  # starts with a dot: no project (an identifier) can collide with it
RELEASES_SUFFIX = ".jsonl"
LAST_SEEN_SUFFIX = ".last.json"

# core/names.py reserves the records' stems as contribution names; they must stay in step.
assert {MANIFEST_NAME, PROVENANCE_NAME} == {f"{n}.json" for n in STORE_RECORD_NAMES}


# --- validation ---------------------------------------------------------------------------


def validate_name(value: object, what: str = "name") -> str:
    """Return `value` if it is a plain identifier, else raise `InvalidNameError` naming it.

    `what` says which kind of name it is ("project", "cell", "contribution") for the message;
    the rule is `further_dagster.core.names`, the one cells are checked by when defined.
    """
    return check_identifier(what, value)


def is_key(value: object) -> bool:
    """True if `value` is a logic key: exactly 32 lowercase hex characters."""
    return type(value) is str and _KEY.fullmatch(value) is not None


def validate_key(value: object) -> str:
    """Return `value` if it is a logic key (32 lowercase hex chars), else raise `StoreError`."""
    if type(value) is not str or _KEY.fullmatch(value) is None:
        raise StoreError(
            f"invalid logic key {value!r}: a key is exactly 32 lowercase hex characters "
            f"(the blake2b digest from further_dagster.core.hashing); pass the key, not a path "
            f"or a prefix"
        )
    return value


def validate_contribution_name(value: object) -> str:
    """Validate a contribution name: an identifier that is not a reserved record name."""
    name = validate_name(value, "contribution")
    if name in STORE_RECORD_NAMES:
        raise InvalidNameError(
            f"contribution name {name!r} is reserved by the artifact store (it would collide "
            f"with {name}.json in result/); rename the contribution"
        )
    return name


# --- instance paths -----------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def _cell_prefix(root: str, project: str, cell: str) -> str:
    validate_name(project, "project")
    validate_name(cell, "cell")
    return os.path.join(root, project, cell) + os.sep


def cell_dir_prefix(root: str, project: str, cell: str) -> str:
    """`<root>/<project>/<cell>/` as a `str`, validated once per (root, project, cell).

    The cache makes a repeated lookup cost a dict probe instead of two regex matches; an
    unhashable argument cannot be a name and is reported as such.
    """
    try:
        return _cell_prefix(root, project, cell)
    except TypeError:
        validate_name(project, "project")
        validate_name(cell, "cell")
        raise


def instance_dir_str(root: str, project: str, cell: str, key: str) -> str:
    """The instance directory as a `str`: the hot path builds no `Path` objects."""
    prefix = cell_dir_prefix(root, project, cell)
    if type(key) is not str or _KEY.fullmatch(key) is None:
        validate_key(key)
    return prefix + key


def result_dir_str(root: str, project: str, cell: str, key: str) -> str:
    """`<instance>/result` as a `str`; its existence is what "stored" means."""
    return instance_dir_str(root, project, cell, key) + os.sep + RESULT_NAME


def instance_dir(root: Path, project: str, cell: str, key: str) -> Path:
    """`<root>/<project>/<cell>/<key>`, after validating every component."""
    return Path(instance_dir_str(str(root), project, cell, key))


def relative_instance_dir(project: str, cell: str, key: str) -> str:
    """The instance directory relative to the root, as written inside records."""
    validate_name(project, "project")
    validate_name(cell, "cell")
    validate_key(key)
    return f"{project}/{cell}/{key}"


def lock_path(inst: Path) -> Path:
    """The lease file of an instance directory."""
    return inst / LOCK_NAME


def guard_path(inst: Path) -> Path:
    """The flock guard serialising lease acquisition, takeover and release."""
    return inst / GUARD_NAME


def state_path(inst: Path) -> Path:
    """The State record of an instance directory."""
    return inst / STATE_NAME


def log_path(inst: Path) -> Path:
    """The cell log of an instance directory."""
    return inst / LOG_NAME


def result_dir(inst: Path) -> Path:
    """The committed result directory of an instance directory."""
    return inst / RESULT_NAME


def result_tmp_dir(inst: Path, token: str) -> Path:
    """The directory an attempt writes into before its single commit rename."""
    return inst / f"{RESULT_TMP_PREFIX}{token}"


def is_result_tmp_name(name: str) -> bool:
    """True for the basename of an attempt's temporary result directory."""
    return name.startswith(RESULT_TMP_PREFIX)


def damaged_dir(inst: Path, stamp: str) -> Path:
    """Where a damaged result of `inst` is moved aside: `<instance>/damaged-<stamp>`."""
    return inst / f"{DAMAGED_PREFIX}{stamp}"


def reason_path(damaged: Path) -> Path:
    """The QuarantineRecord inside a `damaged-<stamp>` directory."""
    return damaged / REASON_NAME


def instance_label(path: Path) -> str:
    """`project.cell@key8` for an instance directory or anything directly inside it (a result
    or temporary result directory), for messages; the path itself if it is not in a store."""
    for inst in (path, path.parent):
        if is_key(inst.name) and is_identifier(inst.parent.name):
            project = inst.parent.parent.name
            if is_identifier(project):
                return f"{project}.{inst.parent.name}@{inst.name[:8]}"
    return str(path)


def manifest_path(result: Path) -> Path:
    """The manifest inside a (temporary or committed) result directory."""
    return result / MANIFEST_NAME


def provenance_path(result: Path) -> Path:
    """The provenance record inside a (temporary or committed) result directory."""
    return result / PROVENANCE_NAME


def contribution_file_name(name: str, suffix: str) -> str:
    """The file name of a contribution: its validated name plus the codec's suffix."""
    validate_contribution_name(name)
    if not suffix.startswith(".") or "/" in suffix or os.sep in suffix:
        raise StoreError(f"codec suffix {suffix!r} must start with '.' and contain no separator")
    return f"{name}{suffix}"


def contribution_path(result: Path, file_name: str) -> Path:
    """A contribution file inside a result directory, refusing names that leave it.

    Used when reading: the file name comes from a manifest on disk, which we do not trust to
    stay inside the directory.
    """
    if not file_name or file_name != os.path.basename(file_name) or file_name in (".", ".."):
        raise StoreError(f"manifest file name {file_name!r} is not a plain file name in {result}")
    return result / file_name


# --- resource release histories -------------------------------------------------------------


def release_history_path(root: Path, project: str, cell: str, skey: str) -> Path:
    """`<root>/.releases/<project>/<cell>/<skey>.jsonl`: the observed releases of one resource
    instance, keyed by its structural key (the logic key without the release)."""
    return Path(release_history_path_str(str(root), project, cell, skey))


def release_history_path_str(root: str, project: str, cell: str, skey: str) -> str:
    """`release_history_path` as a `str`, validated once per (root, project, cell): it is on
    the path of every pre-memoized call."""
    if type(skey) is not str or _KEY.fullmatch(skey) is None:
        validate_key(skey)
    return cell_dir_prefix(os.path.join(root, RELEASES_DIR), project, cell) + skey + RELEASES_SUFFIX


def release_last_seen_path_str(root: str, project: str, cell: str, skey: str) -> str:
    """`<root>/.releases/<project>/<cell>/<skey>.last.json`: the latest observation of one
    resource instance (rewritten atomically on each observation of an unchanged release, so the
    history file grows only when the release changes)."""
    path = release_history_path_str(root, project, cell, skey)
    return path[: -len(RELEASES_SUFFIX)] + LAST_SEEN_SUFFIX
