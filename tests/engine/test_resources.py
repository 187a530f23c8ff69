"""Resource cells in a Session: pre-memoization, releases in keys, freshness policies, tracing."""

import datetime as dt

import pytest

from further_dagster import VAR, Session, current, date_range, latest, present, release
from further_dagster.errors import ReleaseError
from tests.engine import resource_cells
from tests.engine.resource_cells import DATA, RELEASES

pytestmark = pytest.mark.unit

T0 = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += dt.timedelta(**delta)


@pytest.fixture(autouse=True)
def _external_state():
    saved = dict(RELEASES), dict(DATA)
    yield
    RELEASES.clear()
    RELEASES.update(saved[0])
    DATA.clear()
    DATA.update(saved[1])


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def session(further_tmp_root, clock):
    return Session(root=further_tmp_root, progress=False, clock=clock)


def test_pre_memoization_a_stored_release_costs_get_release_and_no_make(session, calls):
    first = session.call("res_demo.total")
    assert first.total == 6
    assert (calls.count("feed_release"), calls.count("feed"), calls.count("total")) == (1, 1, 1)
    for _ in range(3):
        again = session.call("res_demo.total")
        assert again.key == first.key and again.total == 6
    # get_release() was asked every time (policy latest), make() never again: no data read
    assert (calls.count("feed_release"), calls.count("feed"), calls.count("total")) == (4, 1, 1)
    assert session.plan("res_demo.total").missing == []


def test_a_new_release_recomputes_only_the_subgraph_it_reaches(session, calls):
    before = session.call("res_demo.combined")
    assert before.value == 6 + 42 + 3
    assert {c: calls.count(c) for c in ("feed", "total", "static", "combined")} == {
        "feed": 2,  # feed a and feed b
        "total": 1,
        "static": 1,
        "combined": 1,
    }
    RELEASES["a"] = "r2"
    plan = session.plan("res_demo.combined")
    assert sorted(i.cell.name for i in plan.missing) == ["combined", "feed", "total"]
    after = session.call("res_demo.combined")
    assert after.value == 60 + 42 + 3 and after.key != before.key
    # static and feed b were not touched; feed a, total and combined were recomputed once
    assert {c: calls.count(c) for c in ("feed", "total", "static", "combined")} == {
        "feed": 3,
        "total": 2,
        "static": 1,
        "combined": 2,
    }


def test_old_results_stay_addressable_by_release_pin(session, calls):
    old = session.call("res_demo.total")
    RELEASES["a"] = "r2"
    new = session.call("res_demo.total")
    assert (old.total, new.total) == (6, 60)
    makes = calls.count("feed") + calls.count("total")
    again_old = session.call("res_demo.total", freshness=release("r1"))
    assert again_old.key == old.key and again_old.total == 6
    scoped = session.call("res_demo.total", freshness={"res_demo.feed": "release:r1"})
    assert scoped.key == old.key
    assert calls.count("feed") + calls.count("total") == makes
    assert session.releases(again_old) == {"res_demo.feed@" + _feed_key(session, old): "r1"}


def _feed_key(session, result):
    return session.store.read_provenance("res_demo", "total", result.key).deps["feed"][:12]


def test_the_policy_never_enters_a_key(session, calls, clock):
    results = [
        session.call("res_demo.total", freshness=policy)
        for policy in (latest(), present(), current(3600), release("r1"), "latest")
    ]
    assert len({r.key for r in results}) == 1
    assert calls.count("feed") == 1 and calls.count("total") == 1


def test_current_reuses_a_fresh_release_without_calling_get_release(session, calls, clock):
    session.call("res_demo.total")
    assert calls.count("feed_release") == 1
    RELEASES["a"] = "r2"  # the data changed, but within the shelf life we accept the old one
    clock.advance(seconds=30)
    within = session.call("res_demo.total", freshness=current(60))
    assert within.total == 6 and calls.count("feed_release") == 1
    clock.advance(seconds=31)
    expired = session.call("res_demo.total", freshness=current(60))
    assert expired.total == 60 and calls.count("feed_release") == 2


def test_present_uses_the_newest_stored_release_and_asks_only_when_none(session, calls, clock):
    first = session.call("res_demo.total", freshness=present())
    assert first.total == 6 and calls.count("feed_release") == 1  # nothing stored: asked
    RELEASES["a"] = "r2"
    clock.advance(days=365)
    old = session.call("res_demo.total", freshness=present())
    assert old.key == first.key and calls.count("feed_release") == 1
    session.call("res_demo.total")  # latest stores r2
    clock.advance(days=1)
    assert session.call("res_demo.total", freshness=present()).total == 60


def test_date_range_pins_every_resource_to_the_data_of_a_date(session, calls, clock):
    session.call("res_demo.combined")  # r1 for both feeds, observed on May 1st
    clock.advance(days=30)
    RELEASES.update(a="r2", b="r3")
    june = session.call("res_demo.combined")
    assert june.value == 60 + 42 + 1
    makes = calls.count()
    # one instruction pins every resource cell of the pipeline to the data as of May 1st
    may = session.call("res_demo.combined", freshness=date_range("2024-05-01", "2024-05-01"))
    assert may.value == 6 + 42 + 3 and calls.count() - makes == 0
    assert sorted(session.releases(may).values()) == ["r1", "r1"]


def test_date_range_with_no_release_in_it_is_an_error(session, clock):
    session.call("res_demo.total")
    clock.advance(days=10)
    with pytest.raises(ReleaseError) as info:
        session.call("res_demo.total", freshness=date_range("2024-04-01", "2024-04-02"))
    text = str(info.value)
    assert "res_demo.feed" in text and "Widen the date range" in text


def test_a_pin_that_is_neither_stored_nor_current_is_an_error(session):
    session.call("res_demo.total")
    with pytest.raises(ReleaseError, match=r"res_demo\.feed: release 'r9' is neither stored"):
        session.call("res_demo.total", freshness=release("r9"))


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (None, r"returned None \(NoneType\); it must return a non-empty str"),
        ("", "must return a non-empty str"),
        (17, "must return a non-empty str"),
        (ConnectionError("server down"), "raised ConnectionError: server down"),
    ],
)
def test_bad_get_release_answers_are_release_errors_naming_the_cell(session, value, message):
    RELEASES["a"] = value
    with pytest.raises(ReleaseError, match=message) as info:
        session.call("res_demo.total")
    assert "res_demo.feed.get_release(name='a')" in str(info.value)


def test_bad_freshness_instructions_fail_before_anything_runs(session, calls):
    with pytest.raises(ReleaseError, match="positive duration"):
        session.call("res_demo.total", freshness="current:0")
    with pytest.raises(ReleaseError, match="'res_demo.total' is not a resource cell"):
        session.call("res_demo.total", freshness={"res_demo.total": "latest"})
    with pytest.raises(ReleaseError, match="valid forms"):
        session.call("res_demo.total", freshness="newest")
    assert calls.count() == 0


def test_project_scope_and_session_default(further_tmp_root, clock, calls):
    session = Session(root=further_tmp_root, progress=False, clock=clock, freshness=present())
    session.call("res_demo.total")
    RELEASES["a"] = "r2"
    assert session.call("res_demo.total").total == 6  # the session's default: present
    assert session.call("res_demo.total", freshness={"res_demo": "latest"}).total == 60


def test_releases_are_traced_through_dependencies(session):
    result = session.call("res_demo.combined")
    releases = session.releases(result)
    assert sorted(releases.values()) == ["r1", "r1"]
    assert all(label.startswith("res_demo.feed@") for label in releases)
    plan = session.plan("res_demo.combined")
    assert session.releases(plan.roots[0]) == releases
    assert session.releases(session.call("res_demo.static")) == {}


def test_observations_list_the_history_with_stored_flags(session, clock):
    session.call("res_demo.total")
    clock.advance(minutes=5)
    RELEASES["a"] = "r2"
    session.plan("res_demo.total")  # observed, not computed
    seen = session.observations("res_demo.feed")
    assert [(o["release"], o["stored"]) for o in seen] == [("r1", True), ("r2", False)]
    assert seen[1]["observed_at"] == T0 + dt.timedelta(minutes=5)
    assert session.observations("res_demo.feed", name="b") == []


def test_get_release_is_asked_once_per_instance_per_call(session, calls):
    results = session.call("res_demo.total", scale=VAR([1, 2, 3]))
    assert [r.total for r in results] == [6, 12, 18]
    assert calls.count("feed_release") == 1 and calls.count("feed") == 1


def test_instances_run_in_worker_processes_with_their_release(further_tmp_root, calls):
    session = Session(root=further_tmp_root, progress=False, mode="LOCAL_PROCESSES")
    RELEASES["a"] = "r3"  # the child process does not see this dict: the release travels
    assert session.call("res_demo.total").total == 7
    assert resource_cells.Feed.full_name == "res_demo.feed"
