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
import os
import re
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

from further_dagster.errors import CorruptArtifactError

Status = Literal["running", "success", "failed"]

_KEY = re.compile(r"[0-9a-f]{32}")


def utcnow() -> dt.datetime:
    """The current time as an aware UTC datetime (every record stores UTC)."""
    return dt.datetime.now(dt.UTC)


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ErrorInfo(_Record):
    """What went wrong in a failed attempt: exception type, message and full traceback text."""

    type: str
    message: str
    traceback: str


class State(_Record):
    """The status of an instance directory, rewritten at every transition of an attempt.

    `attempts` counts attempts started so far (a crashed attempt counts: it consumed a try).
    `host`, `pid` and `slurm_job_id` name the process of the latest attempt.
    """

    status: Status
    attempts: int = Field(ge=0)
    created_at: AwareDatetime
    updated_at: AwareDatetime
    started_at: AwareDatetime | None = None
    finished_at: AwareDatetime | None = None
    host: str
    pid: int
    slurm_job_id: str | None = None
    error: ErrorInfo | None = None
    duration_s: float | None = None

    @model_validator(mode="after")
    def _status_implies_fields(self) -> State:
        if self.status == "failed" and self.error is None:
            raise ValueError("a failed state must carry its error")
        if self.status != "failed" and self.error is not None:
            raise ValueError(f"a {self.status} state carries no error")
        if self.status == "success" and (self.finished_at is None or self.duration_s is None):
            raise ValueError("a success state must carry finished_at and duration_s")
        if self.status == "running" and self.finished_at is not None:
            raise ValueError("a running state has no finished_at")
        return self


class ManifestEntry(_Record):
    """One contribution of a committed result: its file (relative to `result/`) and codec."""

    file: str
    codec: str


class Manifest(_Record):
    """Contribution name -> file and codec; written last inside the temporary result dir."""

    contributions: dict[str, ManifestEntry]


class GitInfo(_Record):
    """Git commit and branch of the working directory, read from `.git` files (no subprocess)."""

    commit: str | None = None
    branch: str | None = None


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


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a unique temporary sibling and one `os.replace`.

    The temporary name is unique per call so concurrent writers never share a file; a crash
    leaves at most a stray `.<name>.tmp-*` file, never a torn `path`.
    """
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_record(path: Path, record: BaseModel, *, atomic: bool = True) -> None:
    """Serialise a record as indented JSON and write it atomically.

    `atomic=False` is for files inside an uncommitted `result.tmp-*` directory, whose own
    rename is the commit: a second rename per file there would only cost time.
    """
    data = record.model_dump_json(indent=2).encode("utf-8") + b"\n"
    if atomic:
        write_atomic(path, data)
    else:
        with open(path, "wb") as fh:
            fh.write(data)


def read_record(path: Path, model: type[R]) -> R:
    """Read and validate a record; `FileNotFoundError` propagates, anything else is corrupt."""
    data = path.read_bytes()
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
