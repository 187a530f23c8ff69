"""Runtime-resolved parameter kinds: CONST, DYN, STUB and RAND, through a Session."""

import json

import pytest

from further_dagster import DYN, RAND, VAR, Cell, Mode, Req, Session
from further_dagster.errors import CellComputeError, DynamicCallError, ParameterKindError
from tests.engine import dyn_cells

pytestmark = pytest.mark.unit


@pytest.fixture
def dyn(further_registry):
    return dyn_cells.dyn


def provenance(session, result):
    project, _, cell = result.cell.rpartition(".")
    return session.store.read_provenance(project, cell, result.key)


def test_dyn_children_are_memoized_instances_and_recorded(dyn, further_tmp_root, calls):
    session = Session(dyn, root=further_tmp_root, progress=False)
    result = session.call("dyn.search")
    assert result.best == 0.3
    assert calls.count("fit") == 5  # 0, 0.5, 1, then 0.3 and 0.7
    runtime = provenance(session, result).extra["runtime_calls"]
    assert [r["values"]["alpha"] for r in runtime] == [0.0, 0.5, 1.0, 0.3, 0.7]
    assert all(r["values"]["n"] == 2 and r["kind"] == "DYN" for r in runtime)
    # each child is an ordinary instance: a static call with the same values finds it stored
    direct = session.call("dyn.fit", alpha=0.5, n=2)
    assert direct.key in {r["key"] for r in runtime}
    assert calls.count("fit") == 5
    # a second search with another width reuses the coarse children
    session.call("dyn.search", width=0.1)
    assert calls.count("fit") == 7 and calls.count("search") == 2
    # the caller's key does not depend on the dynamic values: a re-call is a cache hit
    assert session.call("dyn.search").key == result.key
    assert calls.count("search") == 2


def test_dyn_callers_key_covers_the_target_and_static_values(dyn, further_tmp_root):
    session = Session(dyn, root=further_tmp_root, progress=False)
    before = session.plan("dyn.search").roots[0].key
    dyn.cells["fit"].logic_version = 2
    try:
        assert session.plan("dyn.search").roots[0].key != before
    finally:
        dyn.cells["fit"].logic_version = 1


def test_dyn_edges_are_not_planned_and_stubs_are_listed(dyn, further_tmp_root, caplog):
    session = Session(dyn, root=further_tmp_root)
    plan = session.plan("dyn.draft")
    assert [i.cell.name for i in plan.instances] == ["draft"]
    assert plan.stubs == ["dyn.draft.fit"]
    assert plan.runtime_edges == ["dyn.draft.fit (STUB)"]
    with caplog.at_level("INFO", logger="further"):
        assert session.call("dyn.draft").loss == pytest.approx(0.04)
    assert "STUB edges" in caplog.text and "dyn.draft.fit" in caplog.text


def test_dyn_children_in_process_mode(dyn, further_tmp_root, calls):
    session = Session(dyn, root=further_tmp_root, progress=False, mode=Mode.LOCAL_PROCESSES)
    assert session.call("dyn.search", width=VAR([0.2, 0.1]))[0].best == 0.3
    assert calls.count("fit") == 7


def test_rand_edge_draws_when_the_caller_runs_and_a_cached_caller_keeps_it(
    dyn, further_tmp_root, calls
):
    session = Session(dyn, root=further_tmp_root, progress=False)
    first = session.call("dyn.ensemble")
    again = session.call("dyn.ensemble")
    assert again.seed == first.seed and calls.count("sim") == 1  # cached caller, earlier draw
    other = session.call("dyn.ensemble", size=2)  # another caller: its own draw
    assert calls.count("sim") == 2
    assert other.seed != first.seed
    record_ = provenance(session, first).extra["runtime_calls"][0]
    assert record_["kind"] == "RAND" and record_["drawn"] == {"seed": first.seed}
    # the child is keyed by the drawn value
    assert session.call("dyn.sim", seed=first.seed).key == record_["key"]
    assert calls.count("sim") == 2


def test_rand_at_the_session_draws_anew_per_call(dyn, further_tmp_root, calls):
    session = Session(dyn, root=further_tmp_root, progress=False)
    draw = RAND(0, 10**9, seed=7)
    seeds = {session.call("dyn.sim", seed=draw).seed for _ in range(3)}
    assert len(seeds) == 3 and calls.count("sim") == 3
    replay = RAND(0, 10**9, seed=7)
    assert {session.call("dyn.sim", seed=replay).seed for _ in range(3)} == seeds
    assert calls.count("sim") == 3  # deterministic with a seed: the same three, all stored


def test_rand_ranges():
    assert 3 <= RAND(3, 3).draw() <= 3
    value = RAND(0.5, 1.5, seed=1).draw("x")
    assert isinstance(value, float) and 0.5 <= value < 1.5
    assert RAND(seed=1).draw("ctx") == RAND(seed=1).draw("ctx")
    with pytest.raises(ParameterKindError, match="empty range"):
        RAND(5, 1)
    with pytest.raises(ParameterKindError, match="empty range"):
        RAND(1.0, 1.0)
    with pytest.raises(ParameterKindError, match="must be a number"):
        RAND("a", 3)


def test_misuse_of_runtime_kinds_is_a_clear_error(dyn, further_registry, further_tmp_root):
    with pytest.raises(ParameterKindError, match="VAR and DYN on one edge"):
        Req("dyn.fit", alpha=DYN, n=VAR([1, 2]))
    session = Session(dyn, root=further_tmp_root, progress=False)
    with pytest.raises(ParameterKindError, match="DYN marks a req_cells edge"):
        session.call("dyn.fit", alpha=DYN)

    class Wrong(Cell, project=dyn):
        req_cells = {"fit": Req("fit", alpha=DYN), "sim": Req("sim")}
        contributions = {"x": float}

        def make(self):
            return {"x": self.call("sim", seed=1).seed}

    with pytest.raises(CellComputeError, match=r"no DYN/STUB edge 'sim'.*DYN/STUB edges: fit"):
        session.call("dyn.wrong")

    class Missing(Cell, project=dyn):
        req_cells = {"fit": Req("fit", alpha=DYN)}
        contributions = {"x": float}

        def make(self):
            return {"x": self.call("fit").loss}

    with pytest.raises(CellComputeError, match=r"needs the value\(s\).*\['alpha'\]"):
        session.call("dyn.missing")
    assert issubclass(DynamicCallError, Exception)


def test_a_dyn_edge_never_called_is_reported_not_fatal(dyn, further_tmp_root):
    class Lazy(Cell, project=dyn):
        req_cells = {"fit": Req("fit", alpha=DYN)}
        contributions = {"x": int}

        def make(self):
            return {"x": 1}

    session = Session(dyn, root=further_tmp_root, progress=False)
    result = session.call("dyn.lazy")
    assert result.x == 1
    log = (session.store.root / "dyn" / "lazy").rglob("*.log")
    text = "".join(p.read_text() for p in log)
    assert "never called its DYN edge 'fit'" in text
    assert json.loads(json.dumps(provenance(session, result).extra)) == {"runtime_calls": []}
