"""Freshness policies: pure choices over a hand-made history and a controllable clock."""

import datetime as dt

import pytest

from further_dagster import current, date_range, latest, present, release
from further_dagster.core.freshness import (
    Current,
    DateRange,
    FreshnessOverrides,
    History,
    Latest,
    Observation,
    Present,
    Release,
    normalize_freshness,
    parse_freshness,
)
from further_dagster.errors import ReleaseError

pytestmark = pytest.mark.unit

T0 = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)


def at(minutes: float) -> dt.datetime:
    return T0 + dt.timedelta(minutes=minutes)


def history(*obs: tuple[str, float], stored: tuple[str, ...] = ()) -> History:
    return History(tuple(Observation(r, at(m)) for r, m in obs), frozenset(stored))


def resolve(policy, hist: History, now: dt.datetime, current_release: str = "now") -> tuple:
    """(release, asked): what the engine does with a policy (without I/O)."""
    chosen = policy.choose(hist, now, where="demo.src")
    if chosen is not None:
        return chosen, False
    return policy.accept(current_release, hist, now, where="demo.src"), True


# --- latest ---------------------------------------------------------------------------------


def test_latest_always_asks_and_needs_no_history():
    hist = history(("r1", 0), stored=("r1",))
    assert resolve(latest(), hist, at(1), "r2") == ("r2", True)
    assert resolve(latest(), History(), at(1), "r1") == ("r1", True)
    assert latest().needs_history is False


# --- current ----------------------------------------------------------------------------------


def test_current_reuses_a_stored_release_within_the_shelf_life_without_asking():
    hist = history(("r1", 0), stored=("r1",))
    policy = current(dt.timedelta(minutes=10))
    assert resolve(policy, hist, at(5), "r2") == ("r1", False)
    assert resolve(policy, hist, at(10), "r2") == ("r1", False)  # the boundary is inside


def test_current_asks_once_the_shelf_life_expired():
    hist = history(("r1", 0), stored=("r1",))
    assert resolve(current(600), hist, at(10.01), "r2") == ("r2", True)


def test_current_uses_the_last_observation_not_the_first():
    hist = history(("r1", 0), ("r2", 8), stored=("r1", "r2"))
    assert resolve(current(300), hist, at(12), "r3") == ("r2", False)
    # the last observation is r2, observed 8 minutes ago: still fresh for a 10 minute shelf
    assert resolve(current(600), hist, at(17), "r3") == ("r2", False)
    assert resolve(current(600), hist, at(19), "r3") == ("r3", True)


def test_current_asks_when_the_last_release_is_not_stored():
    # reusing a release label without its stored data would label fresh data with an old release
    hist = history(("r1", 0))
    assert resolve(current(3600), hist, at(1), "r2") == ("r2", True)


def test_current_with_no_history_asks():
    assert resolve(current(60), History(), T0, "r1") == ("r1", True)


@pytest.mark.parametrize("bad", [0, -1, dt.timedelta(0), dt.timedelta(seconds=-5), "60", True])
def test_current_rejects_a_shelf_life_that_is_not_a_positive_duration(bad):
    with pytest.raises(ReleaseError, match="positive duration") as info:
        current(bad)
    assert "current(3600)" in str(info.value)


def test_current_accepts_seconds_and_timedelta_alike():
    assert current(90) == current(dt.timedelta(seconds=90)) == Current(dt.timedelta(seconds=90))


def test_a_bad_shelf_life_in_a_class_body_points_at_the_class():
    # Core inspects no stack frames: the traceback, not the message, shows the class body.
    with pytest.raises(ReleaseError, match="positive duration") as info:

        class Declared:
            freshness = current(-3)

    assert any(entry.name == "Declared" for entry in info.traceback)


# --- present ----------------------------------------------------------------------------------


def test_present_takes_the_newest_stored_release_whatever_its_age():
    hist = history(("r1", 0), ("r2", 5), ("r3", 9), stored=("r1", "r2"))
    assert resolve(present(), hist, at(10**6), "r4") == ("r2", False)


def test_present_asks_only_when_nothing_is_stored():
    assert resolve(present(), history(("r1", 0)), at(1), "r2") == ("r2", True)
    assert resolve(present(), History(), at(1), "r1") == ("r1", True)


# --- release(pin) ------------------------------------------------------------------------------


def test_release_pin_uses_a_stored_pin_without_asking():
    hist = history(("r1", 0), ("r2", 5), stored=("r1", "r2"))
    assert resolve(release("r1"), hist, at(6), "r2") == ("r1", False)


def test_release_pin_is_fine_when_it_is_current_even_if_not_stored():
    assert resolve(release("r3"), history(("r1", 0)), at(1), "r3") == ("r3", True)


def test_release_pin_neither_stored_nor_current_is_an_error_naming_cell_and_fix():
    hist = history(("r1", 0), ("r2", 5), stored=("r1",))
    with pytest.raises(ReleaseError) as info:
        resolve(release("r9"), hist, at(6), "r2")
    text = str(info.value)
    assert "demo.src" in text and "'r9' is neither stored nor current" in text
    assert "'r1' (stored" in text and "'r2' (not stored" in text
    assert "latest() / present()" in text


def test_release_pin_must_be_a_non_empty_string():
    for bad in ("", None, 3):
        with pytest.raises(ReleaseError, match="non-empty release string"):
            release(bad)
    assert Release("x").pins() == ("x",)


# --- date_range ----------------------------------------------------------------------------------


def test_date_range_takes_the_newest_stored_release_observed_in_the_window():
    hist = history(("r1", 0), ("r2", 60), ("r3", 120), stored=("r1", "r2", "r3"))
    policy = date_range(at(-1), at(90))
    assert resolve(policy, hist, at(10**5), "r4") == ("r2", False)
    assert resolve(date_range(at(-1), at(30)), hist, at(10**5), "r4") == ("r1", False)


def test_date_range_ignores_stored_releases_observed_outside_and_unstored_inside():
    hist = history(("r1", 0), ("r2", 60), stored=("r1",))
    with pytest.raises(ReleaseError) as info:
        resolve(date_range(at(30), at(90)), hist, at(500), "r3")
    text = str(info.value)
    assert "demo.src" in text and "Widen the date range" in text


def test_date_range_accepts_the_current_release_when_the_window_includes_now():
    assert resolve(date_range(at(0), at(60)), History(), at(30), "r1") == ("r1", True)


def test_date_range_accepts_the_current_release_if_it_was_observed_in_the_window():
    hist = history(("r1", 10))  # observed in the window, never stored
    assert resolve(date_range(at(0), at(60)), hist, at(500), "r1") == ("r1", True)


def test_date_range_with_dates_covers_whole_days_and_naive_means_utc():
    policy = date_range(dt.date(2024, 5, 1), "2024-05-01")
    assert policy.start == dt.datetime(2024, 5, 1, tzinfo=dt.UTC)
    assert policy.end == dt.datetime(2024, 5, 1, 23, 59, 59, 999999, tzinfo=dt.UTC)
    naive = date_range(dt.datetime(2024, 1, 1), dt.datetime(2024, 2, 1))
    assert naive.start.tzinfo is dt.UTC


def test_date_range_rejects_reversed_and_unreadable_bounds():
    with pytest.raises(ReleaseError, match="swap"):
        date_range("2024-02-01", "2024-01-01")
    with pytest.raises(ReleaseError, match="not an ISO date"):
        date_range("last tuesday", "2024-01-01")


# --- strings and overrides ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "policy",
    [
        latest(),
        present(),
        current(3600),
        current(0.5),
        release("2024-05-01T10:00:00Z/123"),
        release("etag:with:colons"),
        date_range("2024-01-01", "2024-03-31"),
    ],
)
def test_compact_strings_round_trip(policy):
    assert parse_freshness(str(policy)) == policy


def test_parse_freshness_reads_the_documented_forms():
    assert parse_freshness("latest") == Latest()
    assert parse_freshness(" Present ") == Present()
    assert parse_freshness("current:60") == Current(dt.timedelta(seconds=60))
    assert parse_freshness("release:abc") == Release("abc")
    assert parse_freshness("date_range:2024-01-01..2024-01-31") == DateRange(
        dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
        dt.datetime(2024, 1, 31, 23, 59, 59, 999999, tzinfo=dt.UTC),
    )


@pytest.mark.parametrize(
    "text", ["newest", "current", "current:soon", "release:", "date_range:2024", "latest:1"]
)
def test_parse_freshness_lists_the_valid_forms_on_error(text):
    with pytest.raises(ReleaseError, match="current:<seconds>|positive duration"):
        parse_freshness(text, where="run tag further/freshness")


def test_parse_rejects_a_non_positive_shelf_life():
    with pytest.raises(ReleaseError, match="positive duration"):
        parse_freshness("current:0")


class _Cell:
    def __init__(self, project, name, freshness=None):
        self.project = type("P", (), {"name": project})()
        self.full_name = f"{project}.{name}"
        self.freshness = freshness
        self.is_resource = True


def test_overrides_most_specific_wins_then_the_cells_own():
    a, b = _Cell("proj", "a", present()), _Cell("proj", "b", current(60))
    other = _Cell("other", "c")
    assert FreshnessOverrides().policy_for(a) == present()
    assert FreshnessOverrides().policy_for(other) == latest()  # no policy at all: latest
    everything = normalize_freshness(release("x"))
    assert everything.policy_for(a) == everything.policy_for(other) == release("x")
    scoped = normalize_freshness({"*": "latest", "proj": "present", "proj.b": "release:r1"})
    assert scoped.policy_for(a) == present()
    assert scoped.policy_for(b) == release("r1")
    assert scoped.policy_for(other) == latest()


def test_overrides_merge_and_text_round_trip():
    base = normalize_freshness({"proj": "present"})
    assert base.merged(normalize_freshness({"proj.a": "latest"})).by_scope == {
        "proj": present(),
        "proj.a": latest(),
    }
    assert base.merged(normalize_freshness("latest")) == normalize_freshness("latest")
    for value in ("current:60", {"proj": "present", "proj.a": "release:r1", "*": "latest"}):
        overrides = normalize_freshness(value)
        assert normalize_freshness(overrides.to_text()) == overrides


def test_overrides_check_names_unknown_and_non_resource_scopes():
    a = _Cell("proj", "a")
    plain = _Cell("proj", "plain")
    plain.is_resource = False
    known = [a, plain]
    normalize_freshness({"proj": "latest", "proj.a": "present"}).check(known)
    with pytest.raises(ReleaseError, match="'proj.plain' is not a resource cell"):
        normalize_freshness({"proj.plain": "latest"}).check(known)
    with pytest.raises(ReleaseError, match="names no loaded cell"):
        normalize_freshness({"proj.zzz": "latest"}).check(known)
    with pytest.raises(ReleaseError, match="names no loaded project"):
        normalize_freshness({"nope": "latest"}).check(known)
    with pytest.raises(ReleaseError, match="not a freshness policy"):
        normalize_freshness(42)
