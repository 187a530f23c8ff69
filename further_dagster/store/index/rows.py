"""What the index holds of one instance directory, read from its files (the source of truth).

`read_instance` is the one reader: the commit hook calls it right after the commit rename and
`further-dagster index rebuild` calls it for every directory, so the incremental index and a
rebuilt one are equal by construction. It reads the records as plain JSON (no pydantic model
is validated: the commit just wrote them, and a rebuild of 100,000 instances must not pay
for it) and never decodes a contribution that is not a small JSON file.

Recorded contributions: a JSON-coded contribution of at most `RECORD_MAX_BYTES` whose value is
a scalar (bool, int, float, None), a string of at most `RECORD_MAX_CHARS` characters, or a
list / dict; anything else (arrays, frames, pickles, long strings) is indexed with its codec
and size only.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import stat
from dataclasses import dataclass, field
from typing import Any

from further_dagster.store import layout

# A symlink is never followed (as everywhere in the store): O_NOFOLLOW refuses it.
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC

_NOTHING: Any = object()

RECORD_MAX_BYTES = 4096
RECORD_MAX_CHARS = 256
# A contribution the cell names in `recorded` (provenance extra["recorded"]) is recorded up to
# this size: larger than the automatic rule, still a row, never a file's worth of data.
RECORD_FORCED_MAX_BYTES = 1 << 20
_INT64 = 2**63

FINISHED = frozenset({"success", "failed", "interrupted", "environment"})


FieldRow = tuple[str, str, str, str, str]
"""(project, cell, origin, name, kind): one row of the `fields` catalog."""


@dataclass(slots=True)
class InstanceRows:
    """The rows of one instance in each table (`schema.py`)."""

    instance: dict[str, Any]
    edges: list[dict[str, Any]] = field(default_factory=list)
    contributions: list[dict[str, Any]] = field(default_factory=list)
    fields: set[FieldRow] = field(default_factory=set)

    @property
    def key(self) -> str:
        return str(self.instance["key"])


def kind_of(value: Any) -> str:
    """The kind of a JSON value, which picks its typed column."""
    kind = type(value)
    if kind is bool:
        return "bool"
    if kind is int:
        return "int" if -_INT64 <= value < _INT64 else "json"
    if kind is float:
        return "real"
    if kind is str:
        return "text"
    if value is None:
        return "null"
    return "json"


def dumps(value: Any) -> str:
    """The JSON text the index stores (sorted keys, so equal values are equal text)."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False, allow_nan=True)


def typed_columns(value: Any) -> dict[str, Any]:
    """`kind`, `value_json` and the typed column of a recorded value."""
    kind = kind_of(value)
    out: dict[str, Any] = {
        "kind": kind,
        "value_json": dumps(value),
        "value_bool": value if kind == "bool" else None,
        "value_int": value if kind == "int" else None,
        "value_real": float(value) if kind in ("int", "real") else None,
        "value_text": value if kind == "text" else None,
    }
    return out


def _load(path: str) -> Any:
    """The parsed JSON file at `path`, or `_NOTHING` if it is missing, unreadable, a symlink
    or not JSON (the index skips what it cannot read; `further-dagster verify` reports it)."""
    try:
        fd = os.open(path, _READ_FLAGS)
    except OSError:
        return _NOTHING
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return _NOTHING
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
        return json.loads(b"".join(chunks))
    except (OSError, ValueError):
        return _NOTHING
    finally:
        os.close(fd)


def _read_json(path: str) -> Any:
    found = _load(path)
    return None if found is _NOTHING else found


def _time(value: Any) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.astimezone(dt.UTC)


def _version(value: Any) -> str | None:
    return None if value is None else str(value)


def read_instance(root: str, project: str, cell: str, key: str) -> InstanceRows | None:
    """The rows of `<root>/<project>/<cell>/<key>`, or None if it has nothing to index (no
    finished attempt: never started, running, or crashed; or gone)."""
    inst = layout.instance_dir_str(root, project, cell, key)
    state = _read_json(os.path.join(inst, layout.STATE_NAME))
    if not isinstance(state, dict):
        state = {}
    result = os.path.join(inst, layout.RESULT_NAME)
    provenance = None
    manifest = None
    if os.path.isdir(result) and not os.path.islink(result):
        provenance = _read_json(os.path.join(result, layout.PROVENANCE_NAME))
        manifest = _read_json(os.path.join(result, layout.MANIFEST_NAME))
    if isinstance(provenance, dict) and isinstance(manifest, dict):
        return _committed(root, project, cell, key, result, state, provenance, manifest)
    status = state.get("status")
    if status not in FINISHED:
        return None
    if status == "success":  # its result was moved aside (quarantined) or removed
        status = "missing"
    return InstanceRows(instance=_base_row(project, cell, key, state, status))


def _base_row(
    project: str, cell: str, key: str, state: dict[str, Any], status: str
) -> dict[str, Any]:
    error = state.get("error") if isinstance(state.get("error"), dict) else None
    return {
        "key": key,
        "project": project,
        "cell": cell,
        "project_version": None,
        "api_version": None,
        "logic_version": None,
        "status": status,
        "specs": None,
        "opts": None,
        "releases": None,
        "labels": None,
        "extra": None,
        "created_at": _time(state.get("created_at")),
        "started_at": _time(state.get("started_at")),
        "finished_at": _time(state.get("finished_at")),
        "duration_s": state.get("duration_s"),
        "attempts": state.get("attempts"),
        "failures": state.get("failures"),
        "host": state.get("host"),
        "username": None,
        "pid": state.get("pid"),
        "slurm_job_id": state.get("slurm_job_id"),
        "git_commit": None,
        "git_branch": None,
        "git_dirty": None,
        "error_type": error.get("type") if error else None,
        "error_message": error.get("message") if error else None,
        "path": f"{project}/{cell}/{key}",
    }


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _committed(
    root: str,
    project: str,
    cell: str,
    key: str,
    result: str,
    state: dict[str, Any],
    provenance: dict[str, Any],
    manifest: dict[str, Any],
) -> InstanceRows:
    row = _base_row(project, cell, key, state, "success")
    process = _dict(provenance.get("process"))
    git = _dict(process.get("git"))
    specs = _dict(provenance.get("specs"))
    extra = _dict(provenance.get("extra"))
    labels = extra.get("labels")
    row.update(
        {
            "project_version": _version(extra.get("project_version")),
            "api_version": _version(provenance.get("api_version")),
            "logic_version": _version(provenance.get("logic_version")),
            "specs": dumps(specs),
            "opts": dumps(provenance.get("opts") or {}),
            "releases": dumps(provenance.get("releases") or {}),
            "labels": None if labels is None else dumps(labels),
            "extra": dumps(extra),
            "started_at": _time(provenance.get("started_at")) or row["started_at"],
            "finished_at": _time(provenance.get("finished_at")) or row["finished_at"],
            "duration_s": provenance.get("duration_s", row["duration_s"]),
            "host": process.get("hostname") or row["host"],
            "username": process.get("user"),
            "pid": process.get("pid", row["pid"]),
            "slurm_job_id": process.get("slurm_job_id") or row["slurm_job_id"],
            "git_commit": git.get("commit"),
            "git_branch": git.get("branch"),
            "git_dirty": git.get("dirty"),
            "error_type": None,
            "error_message": None,
        }
    )
    if row["created_at"] is None:
        row["created_at"] = row["started_at"]
    rows = InstanceRows(instance=row)
    rows.fields.add((project, cell, "cell", "", ""))  # the cell has a view, fields or not
    for name, value in specs.items():
        rows.fields.add((project, cell, "spec", name, kind_of(value)))
    deps = _dict(provenance.get("deps"))
    for edge, dep in deps.items():
        swept = isinstance(dep, list)
        for position, child in enumerate(dep if swept else [dep]):
            rows.edges.append(
                {
                    "parent_key": key,
                    "edge": edge,
                    "position": position,
                    "child_key": child,
                    "swept": swept,
                }
            )
    entries = manifest.get("contributions")
    forced = extra.get("recorded")
    forced = set(forced) if isinstance(forced, list) else set()
    for name, entry in entries.items() if isinstance(entries, dict) else ():
        if not isinstance(entry, dict):
            continue
        contribution = _contribution(result, key, name, entry, name in forced)
        rows.contributions.append(contribution)
        if contribution["recorded"]:
            rows.fields.add((project, cell, "contribution", name, contribution["kind"]))
    return rows


_NOT_RECORDED = {
    "recorded": False,
    "kind": None,
    "value_json": None,
    "value_bool": None,
    "value_int": None,
    "value_real": None,
    "value_text": None,
}


def _contribution(
    result: str, key: str, name: str, entry: dict[str, Any], forced: bool = False
) -> dict[str, Any]:
    codec, size, file = entry.get("codec"), entry.get("size"), entry.get("file")
    row: dict[str, Any] = {"key": key, "name": name, "codec": str(codec), "size": size}
    value = _small_json(result, codec, size, file, forced)
    if value is _NOTHING:
        row.update(_NOT_RECORDED)
    else:
        row["recorded"] = True
        row.update(typed_columns(value))
    return row


def _small_json(result: str, codec: Any, size: Any, file: Any, forced: bool = False) -> Any:
    """The value of a small JSON contribution file (or of one the cell names in `recorded`,
    `forced`), or `_NOTHING` if it is not recorded."""
    if codec != "json" or not isinstance(file, str) or os.path.basename(file) != file:
        return _NOTHING
    limit = RECORD_FORCED_MAX_BYTES if forced else RECORD_MAX_BYTES
    if not isinstance(size, int) or size > limit:
        return _NOTHING
    value = _load(os.path.join(result, file))
    if isinstance(value, str) and len(value) > RECORD_MAX_CHARS and not forced:
        return _NOTHING
    return value


__all__ = [
    "FINISHED",
    "FieldRow",
    "RECORD_MAX_BYTES",
    "RECORD_MAX_CHARS",
    "InstanceRows",
    "dumps",
    "kind_of",
    "read_instance",
    "typed_columns",
]
