"""Release histories: one JSON-lines file per resource instance, appended, read, compacted."""

import datetime as dt
import json
import threading

import pytest

from further_dagster.errors import InvalidNameError, StoreError
from further_dagster.store import ReleaseHistory, ReleaseObservation, layout, release_history
from tests.store.conftest import KEY

pytestmark = pytest.mark.unit

T0 = dt.datetime(2024, 5, 1, tzinfo=dt.UTC)


def test_path_is_under_a_dot_directory_that_no_project_can_shadow(tmp_path):
    path = layout.release_history_path(tmp_path, "proj", "feed", KEY)
    assert path == tmp_path / ".releases" / "proj" / "feed" / f"{KEY}.jsonl"
    with pytest.raises(InvalidNameError):
        layout.release_history_path(tmp_path, "../x", "feed", KEY)
    with pytest.raises(StoreError):
        layout.release_history_path(tmp_path, "proj", "feed", "not-a-key")


def test_record_then_read_oldest_first(tmp_path):
    history = ReleaseHistory(tmp_path)
    assert history.read("proj", "feed", KEY) == []
    history.record("proj", "feed", KEY, "r2", T0 + dt.timedelta(hours=1), "sensor")
    history.record("proj", "feed", KEY, "r1", T0)
    found = history.read("proj", "feed", KEY)
    assert [(o.release, o.source) for o in found] == [("r1", "session"), ("r2", "sensor")]
    lines = history.path("proj", "feed", KEY).read_text().splitlines()
    assert len(lines) == 2 and json.loads(lines[0])["release"] == "r2"


def test_a_torn_line_is_skipped_not_fatal(tmp_path):
    history = ReleaseHistory(tmp_path)
    history.record("proj", "feed", KEY, "r1", T0)
    with open(history.path("proj", "feed", KEY), "a") as fh:
        fh.write('{"release": "r2", "observed_')
    assert [o.release for o in history.read("proj", "feed", KEY)] == ["r1"]


def test_records_are_strict():
    with pytest.raises(ValueError):
        ReleaseObservation(release="", observed_at=T0)
    with pytest.raises(ValueError):
        ReleaseObservation(release="r", observed_at=dt.datetime(2024, 1, 1))  # naive


def test_concurrent_appends_never_interleave(tmp_path):
    history = ReleaseHistory(tmp_path)

    def write(n):
        for i in range(200):
            history.record("proj", "feed", KEY, f"release-{n}-{i}-" + "x" * 100, T0)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(history.read("proj", "feed", KEY)) == 800


def test_compaction_keeps_first_and_last_observation_of_each_release(tmp_path, monkeypatch):
    monkeypatch.setattr(release_history, "COMPACT_BYTES", 2000)
    history = ReleaseHistory(tmp_path)
    for i in range(40):
        history.record("proj", "feed", KEY, "r1" if i < 30 else "r2", T0 + dt.timedelta(minutes=i))
    found = history.read("proj", "feed", KEY)
    assert history.path("proj", "feed", KEY).stat().st_size < 2000 + 200
    by_release = {}
    for o in found:
        by_release.setdefault(o.release, []).append(o.observed_at)
    assert min(by_release["r1"]) == T0
    assert max(by_release["r1"]) == T0 + dt.timedelta(minutes=29)
    assert max(by_release["r2"]) == T0 + dt.timedelta(minutes=39)
    assert len(found) < 40


def test_an_unchanged_release_updates_the_last_seen_record_not_the_history(tmp_path):
    history = ReleaseHistory(tmp_path)
    for i in range(10):
        history.record("proj", "feed", KEY, "r1", T0 + dt.timedelta(minutes=i), "sensor")
    path = history.path("proj", "feed", KEY)
    assert len(path.read_text().splitlines()) == 1  # only the first observation of r1
    last = history.last_seen("proj", "feed", KEY)
    assert last is not None and last.observation.observed_at == T0 + dt.timedelta(minutes=9)
    assert layout.release_last_seen_path_str(str(tmp_path), "proj", "feed", KEY).endswith(
        f"{KEY}.last.json"
    )
    # read() still says when the current release was last observed
    found = history.read("proj", "feed", KEY)
    assert [(o.release, o.observed_at) for o in found] == [
        ("r1", T0),
        ("r1", T0 + dt.timedelta(minutes=9)),
    ]
    # a change flushes the last observation of r1, then the first of r2
    history.record("proj", "feed", KEY, "r2", T0 + dt.timedelta(minutes=10), "sensor")
    history.record("proj", "feed", KEY, "r2", T0 + dt.timedelta(minutes=11), "sensor")
    history.record("proj", "feed", KEY, "r1", T0 + dt.timedelta(minutes=12), "sensor")
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(r["release"], r["observed_at"][14:16]) for r in lines] == [
        ("r1", "00"),
        ("r1", "09"),
        ("r2", "10"),
        ("r2", "11"),
        ("r1", "12"),
    ]
    found = history.read("proj", "feed", KEY)
    assert len(found) == 5 and found[-1].release == "r1"


def test_compaction_keeps_ends_with_last_seen_records(tmp_path, monkeypatch):
    monkeypatch.setattr(release_history, "COMPACT_BYTES", 1500)
    history = ReleaseHistory(tmp_path)
    for i in range(60):
        history.record("proj", "feed", KEY, f"r{i // 3}", T0 + dt.timedelta(minutes=i))
    found = history.read("proj", "feed", KEY)
    ends = {}
    for o in found:
        ends.setdefault(o.release, []).append(o.observed_at)
    for n in range(20):
        first, last = T0 + dt.timedelta(minutes=3 * n), T0 + dt.timedelta(minutes=3 * n + 2)
        assert min(ends[f"r{n}"]) == first and max(ends[f"r{n}"]) == last
