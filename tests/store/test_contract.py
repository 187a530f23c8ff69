"""The store contract: what every `Store` implementation must keep (store/base.py).

Every test here runs once per implementation in `IMPLEMENTATIONS` (the `store_factory` fixture
is parametrized over it), as Hamilton's caching suite runs over every result store. A new
implementation (the SQL-index-backed store) is added by one entry there and must pass all of it
unchanged; what is particular to one implementation (its files, its lease) is tested in that
implementation's own module (test_artifact_store.py, test_lease.py, ...).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from further_dagster.errors import CellComputeError, InvalidNameError, StoreError
from further_dagster.store import ArtifactStore, Manifest, Outcome, Provenance, State, Store
from further_dagster.store.base import StoredKey

from .conftest import KEY, KEY2

pytestmark = pytest.mark.unit

KEY3 = "00000000000000000000000000000003"

StoreFactory = Callable[..., Store]


def _filesystem(root: Path, **settings: Any) -> Store:
    settings.setdefault("poll_s", 0.02)
    return ArtifactStore(root, **settings)


# name -> build(root, **settings); settings are ArtifactStore's keyword arguments (max_attempts,
# wait_timeout_s, ...), which every implementation accepts.
IMPLEMENTATIONS: dict[str, Callable[..., Store]] = {"filesystem": _filesystem}


@pytest.fixture(params=sorted(IMPLEMENTATIONS))
def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> StoreFactory:
    """Builds stores of one implementation, all on this test's root."""
    build = IMPLEMENTATIONS[request.param]

    def make(**settings: Any) -> Store:
        return build(tmp_path / "root", **settings)

    return make


@pytest.fixture
def store(store_factory: StoreFactory) -> Store:
    return store_factory()


class Compute:
    """A compute function that counts its calls and returns `values`."""

    def __init__(self, values: Mapping[str, Any] | None = None) -> None:
        self.calls = 0
        self.values = dict(values if values is not None else {"v": 1})
        self.lock = threading.Lock()

    def __call__(self, tmp_dir: Path, logger: logging.Logger) -> Mapping[str, Any]:
        with self.lock:
            self.calls += 1
        return self.values


def failing(tmp_dir: Path, logger: logging.Logger) -> Mapping[str, Any]:
    raise ValueError("compute failed on purpose")


PROV: dict[str, Any] = {"logic_version": 2, "specs": {"alpha": 0.5}, "deps": {"data": KEY2}}


def test_the_implementation_is_a_store(store: Store) -> None:
    assert isinstance(store, Store)


def test_a_miss_computes_once_and_commits(store: Store) -> None:
    compute = Compute()
    assert not store.is_stored("p", "c", KEY)
    outcome = store.ensure("p", "c", KEY, compute, PROV)
    assert isinstance(outcome, Outcome)
    assert outcome.hit is False and outcome.key == KEY and outcome.attempts == 1
    assert compute.calls == 1
    assert store.is_stored("p", "c", KEY)
    assert not store.is_stored("p", "c", KEY2) and not store.is_stored("p", "other", KEY)


def test_a_hit_never_calls_compute(store: Store) -> None:
    store.ensure("p", "c", KEY, Compute(), PROV)
    compute = Compute({"v": "different"})
    for _ in range(3):
        outcome = store.ensure("p", "c", KEY, compute, PROV)
        assert outcome.hit is True and outcome.attempts == 0 and outcome.duration_s == 0
    assert compute.calls == 0
    assert store.load("p", "c", KEY) == {"v": 1}


def test_a_second_store_on_the_same_root_sees_the_commit(store_factory: StoreFactory) -> None:
    store_factory().ensure("p", "c", KEY, Compute(), {})
    other, compute = store_factory(), Compute()
    assert other.is_stored("p", "c", KEY)
    assert other.ensure("p", "c", KEY, compute, {}).hit and compute.calls == 0


def test_load_returns_exactly_what_compute_returned(store: Store) -> None:
    frame = pd.DataFrame({"a": [1, 2, 3], "b": [0.5, 1.5, 2.5], "c": ["x", "y", "z"]})
    values = {
        "one_int": 1,
        "one_float": 1.0,
        "one_bool": True,
        "one_str": "1",
        "nothing": None,
        "mixed": {"k": [1, 1.0, True, "1", None]},
        "array": np.arange(6, dtype=np.int32).reshape(2, 3),
        "floats": np.linspace(0.0, 1.0, 5),
        "frame": frame,
    }
    store.ensure("p", "c", KEY, Compute(values), {})
    loaded = store.load("p", "c", KEY)
    assert set(loaded) == set(values)
    for name in ("one_int", "one_float", "one_bool", "one_str", "nothing"):
        assert type(loaded[name]) is type(values[name]) and loaded[name] == values[name]
    assert [type(x) for x in loaded["mixed"]["k"]] == [int, float, bool, str, type(None)]
    assert loaded["mixed"] == values["mixed"]
    for name in ("array", "floats"):
        assert loaded[name].dtype == values[name].dtype
        assert loaded[name].shape == values[name].shape
        np.testing.assert_array_equal(loaded[name], values[name])
    pd.testing.assert_frame_equal(loaded["frame"], frame)


def test_load_of_some_names_returns_only_those(store: Store) -> None:
    store.ensure("p", "c", KEY, Compute({"a": 1, "b": 2, "c": 3}), {})
    assert store.load("p", "c", KEY, names=["c", "a"]) == {"c": 3, "a": 1}
    assert store.load("p", "c", KEY, names=[]) == {}


def test_a_failing_compute_raises_records_failed_and_is_retried(
    store_factory: StoreFactory,
) -> None:
    store = store_factory(max_attempts=2)
    with pytest.raises(CellComputeError) as info:
        store.ensure("p", "c", KEY, failing, PROV)
    assert info.value.cell == "p.c" and info.value.key == KEY
    assert "ValueError: compute failed on purpose" in info.value.remote_traceback
    state = store.read_state("p", "c", KEY)
    assert state is not None and state.status == "failed" and state.attempts == 1
    assert state.error is not None and state.error.type == "builtins.ValueError"
    assert "compute failed on purpose" in state.error.traceback
    assert not store.is_stored("p", "c", KEY)
    assert list(store.list()) == []

    with pytest.raises(CellComputeError):  # retried: attempt 2 runs and fails
        store.ensure("p", "c", KEY, failing, PROV)
    state = store.read_state("p", "c", KEY)
    assert state is not None and state.status == "failed" and state.attempts == 2

    compute = Compute()
    with pytest.raises(CellComputeError, match="max_attempts=2"):  # the limit: not run again
        store.ensure("p", "c", KEY, compute, PROV)
    assert compute.calls == 0


def test_a_failure_then_a_success_commits(store: Store) -> None:
    with pytest.raises(CellComputeError):
        store.ensure("p", "c", KEY, failing, {})
    outcome = store.ensure("p", "c", KEY, Compute({"v": 2}), {})
    assert outcome.hit is False and outcome.attempts == 2
    assert store.load("p", "c", KEY) == {"v": 2}
    state = store.read_state("p", "c", KEY)
    assert state is not None and state.status == "success" and state.attempts == 2


def test_state_provenance_and_manifest_are_readable_after_commit(store: Store) -> None:
    assert store.read_state("p", "c", KEY) is None
    store.ensure("p", "c", KEY, Compute({"v": 1, "arr": np.zeros(2)}), PROV)
    state = store.read_state("p", "c", KEY)
    assert isinstance(state, State) and state.status == "success" and state.attempts == 1
    provenance = store.read_provenance("p", "c", KEY)
    assert isinstance(provenance, Provenance)
    assert (provenance.project, provenance.cell, provenance.key) == ("p", "c", KEY)
    assert provenance.logic_version == 2 and provenance.specs == {"alpha": 0.5}
    assert provenance.deps == {"data": KEY2}
    assert provenance.finished_at is not None and provenance.duration_s is not None
    manifest = store.read_manifest("p", "c", KEY)
    assert isinstance(manifest, Manifest) and set(manifest.contributions) == {"v", "arr"}


def test_list_shows_exactly_the_committed_keys(store: Store) -> None:
    assert list(store.list()) == []
    store.ensure("p", "c", KEY, Compute(), {})
    store.ensure("p", "c", KEY2, Compute(), {})
    store.ensure("p", "d", KEY, Compute(), {})
    store.ensure("q", "c", KEY3, Compute(), {})
    with pytest.raises(CellComputeError):
        store.ensure("q", "c", KEY, failing, {})  # failed: not committed, not listed
    everything = {
        StoredKey("p", "c", KEY),
        StoredKey("p", "c", KEY2),
        StoredKey("p", "d", KEY),
        StoredKey("q", "c", KEY3),
    }
    listed = list(store.list())
    assert len(listed) == len(everything) and set(listed) == everything
    assert set(store.list("p")) == {k for k in everything if k.project == "p"}
    assert set(store.list(cell="c")) == {k for k in everything if k.cell == "c"}
    assert list(store.list("p", "d")) == [StoredKey("p", "d", KEY)]
    assert list(store.list("nowhere")) == [] and list(store.list("p", "nothing")) == []
    assert all(store.is_stored(k.project, k.cell, k.key) for k in listed)


def test_two_threads_ensuring_one_key_compute_once(store: Store) -> None:
    compute = Compute()
    barrier = threading.Barrier(2)
    outcomes: list[Outcome] = []
    errors: list[BaseException] = []

    def run() -> None:
        barrier.wait()
        try:
            outcomes.append(store.ensure("p", "c", KEY, compute, {}))
        except BaseException as exc:  # surfaced below, with the thread's own traceback
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert compute.calls == 1
    assert sorted(o.hit for o in outcomes) == [False, True]
    assert store.load("p", "c", KEY) == {"v": 1}


@pytest.mark.parametrize(
    "read",
    [
        lambda s: s.load("p", "c", KEY),
        lambda s: s.load("p", "c", KEY, names=["v"]),
        lambda s: s.read_manifest("p", "c", KEY),
        lambda s: s.read_provenance("p", "c", KEY),
    ],
    ids=["load", "load_names", "read_manifest", "read_provenance"],
)
def test_reading_an_unknown_key_raises_store_error(
    store: Store, read: Callable[[Store], object]
) -> None:
    store.ensure("p", "c", KEY2, Compute(), {})  # another key of the cell is stored
    with pytest.raises(StoreError, match="not stored"):
        read(store)


@pytest.mark.parametrize(
    ("project", "cell", "key", "error"),
    [
        ("../p", "c", KEY, InvalidNameError),
        ("p", "c\n", KEY, InvalidNameError),
        ("p", "c", "abc", StoreError),
        ("p", "c", "../" + KEY[3:], StoreError),
    ],
)
def test_bad_names_and_keys_are_refused_before_anything_is_written(
    store: Store, project: str, cell: str, key: str, error: type[Exception]
) -> None:
    compute = Compute()
    with pytest.raises(error):
        store.is_stored(project, cell, key)
    with pytest.raises(error):
        store.ensure(project, cell, key, compute, {})
    assert compute.calls == 0 and list(store.list()) == []
