"""The store contract: what every `Store` implementation must keep (store/base.py).

Every test here runs once per implementation in `IMPLEMENTATIONS` (the `store_factory` fixture
is parametrized over it), as Hamilton's caching suite runs over every result store. A new
implementation (the SQL-index-backed store) is added by one entry there and must pass all of it
unchanged; what is particular to one implementation (its files, its lease) is tested in that
implementation's own module (test_artifact_store.py, test_lease.py, ...).

Integrity is part of the contract: each implementation also names a `Damager` in `DAMAGERS`,
which spoils a committed result the way that implementation can be spoiled (for the filesystem:
edit a file or the manifest), and every implementation must then refuse the result, report it
not intact, and recompute it once it is quarantined.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
import pytest

from further_dagster.errors import (
    CellComputeError,
    ContributionError,
    CorruptArtifactError,
    InputLoadError,
    InvalidNameError,
    StoreError,
    UntrustedPickleError,
)
from further_dagster.store import (
    ArtifactStore,
    Expected,
    Manifest,
    Outcome,
    Provenance,
    State,
    Store,
)
from further_dagster.store.base import StoredKey
from further_dagster.store.codecs import Pinned
from further_dagster.store.records import read_record, write_record

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


class Damager(Protocol):
    """Spoils one committed result of a store of its implementation, after the commit."""

    def flip_byte(self, store: Store, key: str, name: str) -> None:
        """Change one byte of contribution `name` (same size)."""

    def truncate(self, store: Store, key: str, name: str) -> None:
        """Cut contribution `name` short."""

    def remove(self, store: Store, key: str, name: str) -> None:
        """Lose contribution `name`'s data (the manifest still lists it)."""

    def drop_entry(self, store: Store, key: str, name: str) -> None:
        """Drop contribution `name` from the manifest (its data stays)."""

    def relabel(self, store: Store, key: str, name: str, codec: str) -> None:
        """Record another codec for contribution `name` (its data unchanged)."""

    def point_at(self, store: Store, key: str, name: str, other: str) -> None:
        """Make the manifest entry of `name` name `other`'s data."""


class FileDamager:
    """The filesystem store's damage: edits under `<instance>/result/` of project p, cell c."""

    @staticmethod
    def _result(store: Store, key: str) -> Path:
        return store.instance_dir("p", "c", key) / "result"

    def _file(self, store: Store, key: str, name: str) -> Path:
        return (
            self._result(store, key) / store.read_manifest("p", "c", key).contributions[name].file
        )

    def _edit(self, store: Store, key: str, edit: Callable[[dict[str, Any]], None]) -> None:
        path = self._result(store, key) / "manifest.json"
        entries = read_record(path, Manifest).model_dump()
        edit(entries["contributions"])
        write_record(path, Manifest.model_validate(entries))

    def flip_byte(self, store: Store, key: str, name: str) -> None:
        path = self._file(store, key, name)
        data = bytearray(path.read_bytes())
        data[-1] ^= 0x01
        path.write_bytes(bytes(data))

    def truncate(self, store: Store, key: str, name: str) -> None:
        path = self._file(store, key, name)
        path.write_bytes(path.read_bytes()[:-1])

    def remove(self, store: Store, key: str, name: str) -> None:
        self._file(store, key, name).unlink()

    def drop_entry(self, store: Store, key: str, name: str) -> None:
        self._edit(store, key, lambda entries: entries.pop(name))

    def relabel(self, store: Store, key: str, name: str, codec: str) -> None:
        self._edit(store, key, lambda entries: entries[name].update(codec=codec))

    def point_at(self, store: Store, key: str, name: str, other: str) -> None:
        self._edit(store, key, lambda entries: entries.__setitem__(name, entries[other]))


DAMAGERS: dict[str, Damager] = {"filesystem": FileDamager()}


@pytest.fixture(params=sorted(IMPLEMENTATIONS))
def implementation(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def store_factory(implementation: str, tmp_path: Path) -> StoreFactory:
    """Builds stores of one implementation, all on this test's root."""
    build = IMPLEMENTATIONS[implementation]

    def make(**settings: Any) -> Store:
        return build(tmp_path / "root", **settings)

    return make


@pytest.fixture
def damage(implementation: str) -> Damager:
    return DAMAGERS[implementation]


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


# --- integrity ------------------------------------------------------------------------------

VALUES: dict[str, Any] = {
    "number": 12345.678,
    "words": ["a", "b", "c"],
    "array": np.arange(8, dtype=np.float64),
    "frame": pd.DataFrame({"x": [1, 2, 3]}),
    "other": {1, 2},  # a set: pickled
}
DECLARED: dict[str, Any] = {
    "number": float,
    "words": list,
    "array": np.ndarray,
    "frame": pd.DataFrame,
    "other": set,
}


@pytest.fixture
def stored(store: Store) -> Store:
    store.ensure("p", "c", KEY, Compute(VALUES), PROV)
    return store


def test_an_intact_result_is_intact_and_loads_against_its_declaration(stored: Store) -> None:
    expect = Expected(contributions=DECLARED)
    assert stored.is_intact("p", "c", KEY) and stored.is_intact("p", "c", KEY, expect=expect)
    loaded = stored.load("p", "c", KEY, expect=expect)
    assert set(loaded) == set(VALUES) and loaded["number"] == 12345.678
    assert not stored.is_intact("p", "c", KEY2)  # not stored: not intact either


@pytest.mark.parametrize("name", ["number", "words", "array", "frame", "other"])
@pytest.mark.parametrize("spoil", ["flip_byte", "truncate", "remove"])
def test_changed_or_lost_data_is_refused_naming_cell_key_and_file(
    stored: Store, damage: Damager, spoil: str, name: str
) -> None:
    getattr(damage, spoil)(stored, KEY, name)
    with pytest.raises(CorruptArtifactError) as info:
        stored.load("p", "c", KEY)
    message = str(info.value)
    assert f"p.c@{KEY}" in message and name in message
    with pytest.raises(CorruptArtifactError):
        stored.load("p", "c", KEY, names=[name])
    assert stored.load("p", "c", KEY, names=[n for n in VALUES if n != name])  # the rest is fine
    if spoil != "flip_byte":  # the cheap check sees sizes and presence, not contents
        assert not stored.is_intact("p", "c", KEY)


def test_verify_size_still_refuses_a_truncated_file(
    store_factory: StoreFactory, damage: Damager
) -> None:
    store = store_factory(verify="size")
    store.ensure("p", "c", KEY, Compute(VALUES), {})
    damage.truncate(store, KEY, "array")
    with pytest.raises(CorruptArtifactError, match="array"):
        store.load("p", "c", KEY)


def test_a_dropped_manifest_entry_fails_the_declaration(stored: Store, damage: Damager) -> None:
    damage.drop_entry(stored, KEY, "words")
    expect = Expected(contributions=DECLARED)
    with pytest.raises(CorruptArtifactError, match="words"):
        stored.load("p", "c", KEY, expect=expect)
    with pytest.raises(CorruptArtifactError, match="words"):
        stored.load("p", "c", KEY, names=["words"])
    assert not stored.is_intact("p", "c", KEY, expect=expect)


@pytest.mark.parametrize(
    ("name", "codec"),
    [("words", "pickle"), ("array", "json"), ("frame", "npy"), ("other", "json")],
)
def test_a_relabelled_codec_is_refused_before_decoding(
    stored: Store, damage: Damager, name: str, codec: str
) -> None:
    damage.relabel(stored, KEY, name, codec)
    with pytest.raises(CorruptArtifactError, match=name):
        stored.load("p", "c", KEY)
    assert not stored.is_intact("p", "c", KEY)


@pytest.mark.parametrize(("name", "other"), [("number", "frame"), ("words", "other")])
def test_an_entry_pointed_at_another_file_is_refused(
    stored: Store, damage: Damager, name: str, other: str
) -> None:
    damage.point_at(stored, KEY, name, other)
    with pytest.raises(CorruptArtifactError, match=name):
        stored.load("p", "c", KEY, expect=Expected(contributions=DECLARED))
    assert not stored.is_intact("p", "c", KEY)


def test_codecs_must_agree_with_the_declaration(stored: Store) -> None:
    wrong_type = Expected(contributions={**DECLARED, "number": pd.DataFrame})
    with pytest.raises(CorruptArtifactError, match="number"):
        stored.load("p", "c", KEY, expect=wrong_type)
    assert not stored.is_intact("p", "c", KEY, expect=wrong_type)
    with pytest.raises(CorruptArtifactError, match="codec = 'json'"):
        stored.load("p", "c", KEY, expect=Expected(codec="json"))


def test_quarantine_moves_a_result_aside_and_the_next_ensure_recomputes_it(
    stored: Store, damage: Damager
) -> None:
    damage.flip_byte(stored, KEY, "array")
    moved = stored.quarantine("p", "c", KEY, "a flipped byte")
    assert moved is not None
    assert not stored.is_stored("p", "c", KEY) and list(stored.list()) == []
    with pytest.raises(StoreError, match="not stored"):
        stored.load("p", "c", KEY)
    assert stored.quarantine("p", "c", KEY, "again") is None  # nothing left to move
    compute = Compute({"v": 2})
    outcome = stored.ensure("p", "c", KEY, compute, PROV)
    assert outcome.hit is False and compute.calls == 1
    assert stored.load("p", "c", KEY) == {"v": 2}


def test_a_pickle_of_another_project_needs_trust(store_factory: StoreFactory) -> None:
    values = {"other": {1, 2}}
    store_factory().ensure("lib", "c", KEY, Compute(values), {})
    plain = store_factory()
    assert plain.load("lib", "c", KEY) == values  # read by its caller: not external
    assert plain.load("lib", "c", KEY, expect=Expected(reader="lib")) == values
    with pytest.raises(UntrustedPickleError, match=r"lib.*trust=\['lib'\]"):
        plain.load("lib", "c", KEY, expect=Expected(reader="app"))
    trusting = store_factory(trust=["lib"])
    assert trusting.load("lib", "c", KEY, expect=Expected(reader="app")) == values


def test_a_cyclic_value_is_a_contribution_error_and_commits_nothing(store: Store) -> None:
    cyclic: list[Any] = [1]
    cyclic.append(cyclic)
    with pytest.raises(ContributionError, match="contains itself"):
        store.ensure("p", "c", KEY, Compute({"x": cyclic}), {})
    assert not store.is_stored("p", "c", KEY)


def test_a_pinned_codec_is_used_or_refused_never_pickle(store: Store) -> None:
    store.ensure("p", "c", KEY, Compute({"x": Pinned([1, 2], "json")}), {})
    assert store.read_manifest("p", "c", KEY).contributions["x"].codec == "json"
    with pytest.raises(ContributionError, match="'npy'"):
        store.ensure("p", "c", KEY2, Compute({"x": Pinned({1, 2}, "npy")}), {})
    assert not store.is_stored("p", "c", KEY2)


# --- attempts: how they end, what counts, retries (issue #8) --------------------------------


def test_interrupted_and_environment_attempts_do_not_count(store_factory: StoreFactory) -> None:
    store = store_factory(max_attempts=1)

    def interrupted(tmp_dir: Path, logger: logging.Logger) -> Mapping[str, Any]:
        raise KeyboardInterrupt

    def unloadable(tmp_dir: Path, logger: logging.Logger) -> Mapping[str, Any]:
        raise InputLoadError("p.c: its input 'x' could not be loaded")

    with pytest.raises(KeyboardInterrupt):
        store.ensure("p", "c", KEY, interrupted, {})
    state = store.read_state("p", "c", KEY)
    assert state is not None and (state.status, state.failures) == ("interrupted", 0)
    with pytest.raises(InputLoadError):
        store.ensure("p", "c", KEY, unloadable, {})
    state = store.read_state("p", "c", KEY)
    assert state is not None and (state.status, state.failures) == ("environment", 0)
    assert store.ensure("p", "c", KEY, Compute(), {}).attempts == 3  # still allowed to run


def test_a_contribution_error_is_itself_and_refuses_the_key_until_reset(store: Store) -> None:
    def wrong(tmp_dir: Path, logger: logging.Logger) -> Mapping[str, Any]:
        raise ContributionError("p.c.make() returned str for contribution 'a', declared as int")

    with pytest.raises(ContributionError, match="declared as int"):
        store.ensure("p", "c", KEY, wrong, {})
    compute = Compute()
    with pytest.raises(ContributionError, match="refused"):
        store.ensure("p", "c", KEY, compute, {})
    assert compute.calls == 0
    reset = store.reset_failures("p", "c", KEY)
    assert reset is not None and reset.failures == 0 and reset.reset_at is not None
    assert store.ensure("p", "c", KEY, compute, {}).hit is False and compute.calls == 1
    assert store.reset_failures("p", "c", KEY) is None  # stored: nothing to reset
    assert store.reset_failures("p", "c", KEY2) is None  # never ran


def test_a_refusal_names_the_call_that_retries_it(store_factory: StoreFactory) -> None:
    store = store_factory(max_attempts=1)
    with pytest.raises(CellComputeError):
        store.ensure("p", "c", KEY, failing, {})
    with pytest.raises(CellComputeError, match="max_attempts=1") as refused:
        store.ensure("p", "c", KEY, Compute(), {})
    assert "retry_failed=True" in str(refused.value) and "further-dagster retry" in str(
        refused.value
    )
    assert store.reset_failures("p", "c", KEY) is not None
    assert store.ensure("p", "c", KEY, Compute(), {}).hit is False


def test_interrupt_abandons_a_running_attempt(store: Store) -> None:
    inside, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def slow(tmp_dir: Path, logger: logging.Logger) -> Mapping[str, Any]:
        inside.set()
        release.wait(10)
        return {"v": "too late"}

    def run() -> None:
        try:
            store.ensure("p", "c", KEY, slow, {})
        except BaseException as exc:  # noqa: BLE001 - asserted below
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    assert inside.wait(10)
    assert store.interrupt("p", "c", KEY, "the caller pressed Ctrl-C") is True
    state = store.read_state("p", "c", KEY)
    assert state is not None and state.status == "interrupted" and state.failures == 0
    assert state.error is not None and "Ctrl-C" in state.error.message
    other = Compute({"v": "mine"})
    assert store.ensure("p", "c", KEY, other, {}).hit is False  # the lease was released at once
    release.set()
    thread.join(10)
    assert store.load("p", "c", KEY) == {"v": "mine"}  # what the abandoned make() returned is gone
    assert errors and isinstance(errors[0], StoreError)
    assert store.interrupt("p", "c", KEY2) is False  # nothing of ours runs there
