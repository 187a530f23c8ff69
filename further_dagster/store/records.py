"""The records the store writes to disk, and the one way to write and read them.

Every record is a pydantic model with `extra="forbid", frozen=True`: a typo in a field name or
a record written by an incompatible version fails loudly when read instead of being half
understood, and a record cannot be mutated after it was validated. `State.status` is a
`Literal` tag and a validator enforces what each status implies (a failed state carries its
error, a success its finish time), so a reader can trust the combination it sees.

Records are written atomically (temporary file + `os.replace`), so a reader sees the previous
version or the new one, never a torn file. Paths inside records are relative to the store root,
so a root can be moved or mounted elsewhere.
"""

from __future__ import annotations

import datetime as dt
import errno
import os
import re
import stat
import uuid
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    field_validator,
    model_validator,
)
from pydantic import ValidationError as _PydanticValidationError

from further_dagster.errors import CorruptArtifactError, StoreError
from further_dagster.store.durability import fsync_dir

Status = Literal["running", "success", "failed", "interrupted", "environment"]
"""`running` while an attempt runs; `success` once committed; `failed`: the cell's code failed
(counted toward max_attempts); `interrupted`: Ctrl-C, SystemExit, a signal or an abandoned
thread stopped it; `environment`: the store or the machine failed it (disk full, read-only root,
an input that could not be loaded). Only `failed` counts."""

ENDED_WITH_ERROR: frozenset[str] = frozenset({"failed", "interrupted", "environment"})
"""The statuses that carry an `ErrorInfo`."""

_KEY = re.compile(r"[0-9a-f]{32}")


def utcnow() -> dt.datetime:
    """The current time as an aware UTC datetime (every record stores UTC)."""
    return dt.datetime.now(dt.UTC)


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ErrorInfo(_Record):
    """What ended an attempt: exception type, message and full traceback text.

    `retryable` is False for a deterministic failure (a `ContributionError`: the same code
    returns the same wrong values), which is refused on the next call like a key that reached
    max_attempts, until it is retried explicitly.
    """

    type: str
    message: str
    traceback: str
    retryable: bool = True


class State(_Record):
    """The status of an instance directory, rewritten at every transition of an attempt.

    `attempts` counts attempts started so far, of every kind (a crashed one included): it is
    the attempt number. `failures` counts the `failed` ones since the last explicit retry; that
    is what `max_attempts` limits, so interrupted, environment and crashed attempts never use
    up a try. `reset_at` is when a retry (`Session.call(..., retry_failed=True)`,
    `further-dagster retry`) last reset `failures`. `host`, `pid` and `slurm_job_id` name the
    process of the latest attempt.
    """

    status: Status
    attempts: int = Field(ge=0)
    failures: int = Field(default=0, ge=0)
    created_at: AwareDatetime
    updated_at: AwareDatetime
    started_at: AwareDatetime | None = None
    finished_at: AwareDatetime | None = None
    host: str
    pid: int
    slurm_job_id: str | None = None
    error: ErrorInfo | None = None
    duration_s: float | None = None
    reset_at: AwareDatetime | None = None

    @model_validator(mode="before")
    @classmethod
    def _failures_of_older_records(cls, data: Any) -> Any:
        # Records written before `failures` existed counted every failed attempt in `attempts`.
        if isinstance(data, dict) and "failures" not in data and data.get("status") == "failed":
            return {**data, "failures": data.get("attempts", 0)}
        return data

    @model_validator(mode="after")
    def _status_implies_fields(self) -> State:
        ended_with_error = self.status in ENDED_WITH_ERROR
        if ended_with_error and self.error is None:
            raise ValueError(f"a {self.status} state must carry its error")
        if not ended_with_error and self.error is not None:
            raise ValueError(f"a {self.status} state carries no error")
        if self.status == "success" and (self.finished_at is None or self.duration_s is None):
            raise ValueError("a success state must carry finished_at and duration_s")
        if self.status == "running" and self.finished_at is not None:
            raise ValueError("a running state has no finished_at")
        if self.failures > self.attempts:
            raise ValueError(f"failures={self.failures} exceeds attempts={self.attempts}")
        return self


class ManifestEntry(_Record):
    """One contribution of a committed result: its file (in `result/`), codec, size and digest.

    `file` is `<contribution name><codec suffix>`. `size` (bytes) and `blake2b` (the hex
    blake2b-256 digest of the file's bytes) are computed after the file is written and before
    the commit rename; loads compare them with the file. Manifests committed before they were
    recorded have neither (None): such results get every check except the size and digest.
    """

    file: str
    codec: str
    size: int | None = Field(default=None, ge=0)
    blake2b: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")


class Manifest(_Record):
    """Contribution name -> file, codec, size and digest; written last inside the temporary
    result dir."""

    contributions: dict[str, ManifestEntry]


class QuarantineRecord(_Record):
    """`damaged-<stamp>/reason.json`: why a committed result was moved aside, when, by whom.

    `reason` is what the caller found; `found` what the store's own checks report at the time
    of the move (None if they pass: the damage was in the declared contributions or types).
    """

    project: str
    cell: str
    key: str
    reason: str
    found: str | None = None
    moved_at: AwareDatetime
    host: str
    pid: int
    user: str


class GitInfo(_Record):
    """Git commit and branch of the working directory, read from `.git` files, and whether
    tracked files differed from the commit when the process started (None: unknown)."""

    commit: str | None = None
    branch: str | None = None
    dirty: bool | None = None


class ProcessFacts(_Record):
    """Facts about the process that computed a result, gathered once per process."""

    python_version: str
    platform: str
    hostname: str
    user: str
    pid: int
    argv: list[str]
    executable: str
    packages: dict[str, str]
    git: GitInfo | None = None
    slurm_job_id: str | None = None


class Provenance(_Record):
    """Where a committed result came from: identity inputs, process facts and timings.

    `path` is the instance directory relative to the store root. `deps` maps a dependency edge
    to the logic key it resolved to (a list of keys for a fan-in); `releases` holds the resolved
    releases of resource instances; `opts` are the non-identity options the run used; `extra` is
    free JSON for the caller (e.g. tracked library versions).
    """

    project: str
    cell: str
    key: str
    path: str
    logic_version: int | str | None = None
    api_version: int | str | None = None
    specs: dict[str, JsonValue] = Field(default_factory=dict)
    opts: dict[str, JsonValue] = Field(default_factory=dict)
    deps: dict[str, str | list[str]] = Field(default_factory=dict)
    releases: dict[str, JsonValue] = Field(default_factory=dict)
    extra: dict[str, JsonValue] = Field(default_factory=dict)
    process: ProcessFacts
    started_at: AwareDatetime
    finished_at: AwareDatetime | None = None
    duration_s: float | None = None

    @field_validator("deps")
    @classmethod
    def _deps_are_keys(cls, deps: dict[str, str | list[str]]) -> dict[str, str | list[str]]:
        for edge, keys in deps.items():
            for k in [keys] if isinstance(keys, str) else keys:
                if _KEY.fullmatch(k) is None:
                    raise ValueError(f"dependency {edge!r} has {k!r}, not a 32-hex logic key")
        return deps


class LeaseRecord(_Record):
    """Content of the `lock` file: who holds the lease and how long it lasts without heartbeat.

    Waiters judge expiry by the holder's own `lease_s` (the holder promised a heartbeat well
    within it), not by theirs, so a waiter configured with a short lease never steals a live
    lease from a holder configured with a long one.
    """

    token: str
    pid: int
    host: str
    acquired_at: AwareDatetime
    lease_s: float = Field(gt=0)
    machine: str | None = None
    """`<boot id>/<pid namespace>` of the holder (Linux): a waiter with the same value can ask
    the kernel whether `pid` is alive, and takes a dead holder's lease at once."""
    started: int | None = None
    """The holder process's start time (clock ticks since boot), to tell a reused pid apart."""


class ReleaseObservation(_Record):
    """One line of a resource instance's release history: what `get_release()` answered, when,
    and who asked (`session`, `dagster` observation, `sensor`)."""

    release: str = Field(min_length=1)
    observed_at: AwareDatetime
    source: str = "session"


PROVENANCE_INPUT_FIELDS = (
    "project",
    "cell",
    "key",
    "logic_version",
    "api_version",
    "specs",
    "opts",
    "deps",
    "releases",
    "extra",
)
"""Keys accepted in the `provenance` mapping passed to `ArtifactStore.ensure`.

`project`, `cell` and `key` are optional there and must equal the `ensure` arguments.
"""


# --- reading and writing ------------------------------------------------------------------

R = TypeVar("R", bound=BaseModel)


def write_atomic(path: Path, data: bytes, *, fsync: bool = False) -> None:
    """Write `data` to `path` through a unique temporary sibling and one `os.replace`.

    The temporary name is unique per call so concurrent writers never share a file; a crash
    leaves at most a stray `.<name>.tmp-*` file, never a torn `path`. `fsync=True`
    (`FURTHER_FSYNC=1`) flushes the file before the rename and the directory after it, so the
    new version also survives a power loss.
    """
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    if fsync:
        fsync_dir(path.parent)


def open_nofollow(path: str | os.PathLike[str], flags: int, mode: int = 0o644) -> int:
    """`os.open(path, flags | O_NOFOLLOW | O_CLOEXEC, mode)`; a symlink at `path` is refused.

    Raises:
        StoreError: `path` is a symlink (the message names it; raised with no `OSError` in
            its context, so it is not mistaken for an environment failure).
        OSError: any other failure to open.
    """
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
    raise StoreError(
        f"{os.fspath(path)} is a symlink; the store never follows symlinks inside its root (a "
        f"link there would read or write files outside it). Remove the link (its target is "
        f"untouched) and call again"
    )


def read_bytes_nofollow(path: Path) -> bytes:
    """The bytes of the regular file `path`, refusing a symlink or a non-regular file.

    Raises:
        FileNotFoundError: there is no such file.
        StoreError: `path` is a symlink or not a regular file (the message names it).
    """
    fd = open_nofollow(path, os.O_RDONLY)
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise StoreError(f"{path} is not a regular file; remove it and recompute")
        return fh.read()


def write_record(
    path: Path, record: BaseModel, *, atomic: bool = True, fsync: bool = False
) -> None:
    """Serialise a record as indented JSON and write it atomically.

    `atomic=False` is for files inside an uncommitted `result.tmp-*` directory, whose own
    rename is the commit: a second rename per file there would only cost time (and an fsync
    there is the committer's: `durability.fsync_tree` before the rename).
    """
    data = record.model_dump_json(indent=2).encode("utf-8") + b"\n"
    if atomic:
        write_atomic(path, data, fsync=fsync)
    else:
        with open(path, "wb") as fh:
            fh.write(data)


def read_record(path: Path, model: type[R]) -> R:
    """Read and validate a record; `FileNotFoundError` propagates, anything else is corrupt.

    The file is opened with `O_NOFOLLOW`: a record that is a symlink is refused (`StoreError`
    naming it) instead of read from wherever it points.
    """
    data = read_bytes_nofollow(path)
    try:
        return model.model_validate_json(data)
    except _PydanticValidationError as exc:
        raise CorruptArtifactError(
            f"{path} is not a valid {model.__name__} record ({exc.error_count()} error(s): "
            f"{exc.errors()[0]['msg']} at {'.'.join(str(p) for p in exc.errors()[0]['loc'])}); "
            f"it was written by another version or edited by hand: delete it and recompute"
        ) from exc


def provenance_input_errors(values: Any) -> list[str]:
    """Unknown keys in a caller's provenance mapping, checked before compute runs."""
    return sorted(k for k in values if k not in PROVENANCE_INPUT_FIELDS)
