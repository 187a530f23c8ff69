"""Records: frozen, no unknown fields, status implies its fields, written atomically."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from further_dagster.errors import CorruptArtifactError
from further_dagster.store.provenance import process_facts
from further_dagster.store.records import (
    ErrorInfo,
    LeaseRecord,
    Manifest,
    ManifestEntry,
    Provenance,
    State,
    read_record,
    utcnow,
    write_atomic,
    write_record,
)

from .conftest import KEY, KEY2

pytestmark = pytest.mark.unit

NOW = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)


def running(**overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "status": "running",
        "attempts": 1,
        "created_at": NOW,
        "updated_at": NOW,
        "started_at": NOW,
        "host": "h",
        "pid": 1,
    }
    return {**fields, **overrides}


def test_records_are_frozen() -> None:
    state = State(**running())
    with pytest.raises(ValidationError, match="frozen"):
        state.status = "success"  # type: ignore[misc]
    entry = ManifestEntry(file="a.json", codec="json")
    with pytest.raises(ValidationError):
        entry.file = "b"  # type: ignore[misc]


@pytest.mark.parametrize(
    "model,data",
    [
        (State, running(bogus=1)),
        (ManifestEntry, {"file": "a", "codec": "json", "sha1": "00"}),
        (Manifest, {"contributions": {}, "version": 2}),
        (ErrorInfo, {"type": "E", "message": "m", "traceback": "t", "cause": None}),
    ],
)
def test_unknown_fields_are_rejected(model: type[BaseModel], data: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        model.model_validate(data)


def test_status_is_a_closed_tag() -> None:
    with pytest.raises(ValidationError):
        State(**running(status="done"))


def test_status_implies_its_fields() -> None:
    with pytest.raises(ValidationError, match="failed state must carry its error"):
        State(**running(status="failed", finished_at=NOW))
    error = ErrorInfo(type="ValueError", message="m", traceback="tb")
    with pytest.raises(ValidationError, match="carries no error"):
        State(**running(error=error))
    with pytest.raises(ValidationError, match="success state must carry"):
        State(**running(status="success"))
    with pytest.raises(ValidationError, match="running state has no finished_at"):
        State(**running(finished_at=NOW))
    ok = State(**running(status="failed", error=error, finished_at=NOW, duration_s=0.1))
    assert ok.error == error


def test_naive_datetimes_are_rejected() -> None:
    with pytest.raises(ValidationError, match="timezone"):
        State(**running(created_at=dt.datetime(2024, 1, 1)))
    assert utcnow().tzinfo is dt.UTC


def test_record_round_trip_and_corrupt_record(tmp_path: Path) -> None:
    state = State(**running(slurm_job_id="42"))
    path = tmp_path / "state.json"
    write_record(path, state)
    assert read_record(path, State) == state
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]  # no temp file left

    path.write_text('{"status": "running"}')
    with pytest.raises(CorruptArtifactError, match="state.json"):
        read_record(path, State)
    path.write_text("not json")
    with pytest.raises(CorruptArtifactError, match="not a valid State"):
        read_record(path, State)
    with pytest.raises(FileNotFoundError):
        read_record(tmp_path / "absent.json", State)


def test_write_atomic_replaces_and_cleans_up_on_failure(tmp_path: Path) -> None:
    path = tmp_path / "f"
    write_atomic(path, b"one")
    write_atomic(path, b"two")
    assert path.read_bytes() == b"two"
    with pytest.raises(TypeError):
        write_atomic(path, "not bytes")  # type: ignore[arg-type]
    assert path.read_bytes() == b"two"
    assert [p.name for p in tmp_path.iterdir()] == ["f"]


def _provenance(**overrides: Any) -> Provenance:
    fields: dict[str, Any] = {
        "project": "p",
        "cell": "c",
        "key": KEY,
        "path": f"p/c/{KEY}",
        "process": process_facts(),
        "started_at": NOW,
    }
    return Provenance(**{**fields, **overrides})


def test_provenance_accepts_json_inputs_and_keys() -> None:
    prov = _provenance(
        logic_version=2,
        specs={"lr": 0.1, "layers": [1, 2], "name": None},
        deps={"data": KEY2, "parts": [KEY, KEY2]},
        releases={"raw": "2024-05-01"},
    )
    assert Provenance.model_validate_json(prov.model_dump_json()) == prov
    assert type(Provenance.model_validate_json(prov.model_dump_json()).logic_version) is int


@pytest.mark.parametrize(
    "bad",
    [
        {"deps": {"data": "not-a-key"}},
        {"deps": {"parts": [KEY, "x"]}},
        {"specs": {"t": (1, object())}},
        {"specs": {"s": {1, 2}}},
        {"surprise": 1},
    ],
)
def test_provenance_rejects_bad_inputs(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        _provenance(**bad)


def test_lease_record_requires_positive_lease() -> None:
    with pytest.raises(ValidationError):
        LeaseRecord(token="t", pid=1, host="h", acquired_at=NOW, lease_s=0)


# --- attempt statuses (issue #8) -------------------------------------------------------------


@pytest.mark.parametrize("status", ["interrupted", "environment"])
def test_interrupted_and_environment_states_carry_their_error(status: str) -> None:
    error = ErrorInfo(type="builtins.KeyboardInterrupt", message="", traceback="tb")
    with pytest.raises(ValidationError, match=f"a {status} state must carry its error"):
        State(**running(status=status, finished_at=NOW))
    state = State(**running(status=status, finished_at=NOW, error=error))
    assert state.failures == 0 and state.error is not None and state.error.retryable


def test_failures_never_exceed_attempts_and_older_records_count_their_failures() -> None:
    with pytest.raises(ValidationError, match="exceeds attempts"):
        State(**running(failures=2))
    older = running(status="failed", attempts=3, finished_at=NOW)
    older["error"] = {"type": "E", "message": "m", "traceback": "t"}
    assert State.model_validate(older).failures == 3  # written before `failures` existed
    assert State(**running()).failures == 0


def test_a_lease_record_may_name_the_holders_machine() -> None:
    record = LeaseRecord(
        token="t", pid=1, host="h", acquired_at=NOW, lease_s=15, machine="b/pid:[1]", started=7
    )
    assert LeaseRecord.model_validate_json(record.model_dump_json()) == record
    assert LeaseRecord(token="t", pid=1, host="h", acquired_at=NOW, lease_s=15).machine is None
