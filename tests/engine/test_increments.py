"""Incrementing cells: every request form, resume from the last stored increment, kill -9."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import further_dagster
from further_dagster import Cell, IncrementingCell, Increments, Mode, Project, Req, Session, Specs
from further_dagster.core.iterative import increment_key
from further_dagster.engine.increments import StoredIncrements
from further_dagster.errors import CellDefinitionError, IncrementsError, StoreError
from tests.engine.cells import record

pytestmark = pytest.mark.unit

inc = Project("inc_demo")
REPO = Path(further_dagster.__file__).resolve().parents[1]


class Chain(IncrementingCell, project=inc):
    """A running sum: increment i adds i (so increment n holds n(n+1)/2)."""

    class Specs(Specs):
        scale: int = 1

    contributions = {"total": int, "index": int}

    def make_increment(self, previous):
        record("chain", self.key)
        delay = float(os.environ.get("FURTHER_TEST_DELAY", "0"))
        if delay:
            time.sleep(delay)
        assert (previous is None) == (self.increment == 1)
        assert previous is None or previous.increment == self.increment - 1
        before = previous.total if previous is not None else 0
        return {"total": before + self.specs.scale * self.increment, "index": self.increment}


class Summary(Cell, project=inc):
    req_cells = {
        "exact": Req("chain", increments=Increments(exactly=10)),
        "some": Req("chain", increments=Increments(at_least=5)),
    }
    contributions = {"indices": list}

    def make(self):
        return {"indices": [self.inputs["exact"].index, self.inputs["some"].index]}


class Reader(Cell, project=inc):
    req_cells = {"chain": Req("chain", increments=Increments(at_least=5))}
    contributions = {"index": int}

    def make(self):
        return {"index": self.inputs["chain"].index}


def session(root, **kw):
    return Session(inc, root=root, progress=False, **kw)


def call(s, n=None, **instruction):
    return s.call("inc_demo.chain", increments=Increments(**instruction) if instruction else None)


def test_exactly_resumes_from_the_last_stored_increment(further_tmp_root, calls):
    s = session(further_tmp_root)
    five = call(s, exactly=5)
    assert (five.increment, five.total) == (5, 15) and calls.count("chain") == 5
    three = call(s, exactly=3)  # stored already: loads increment 3, computes nothing
    assert (three.increment, three.total) == (3, 6) and calls.count("chain") == 5
    seven = call(s, exactly=7)
    assert (seven.increment, seven.total) == (7, 28) and calls.count("chain") == 7
    plan = s.plan("inc_demo.chain", increments=Increments(exactly=12))
    assert [i.increment for i in plan.missing] == [8, 9, 10, 11, 12]  # resumes at 8


def test_at_least_best_and_more(further_tmp_root, calls):
    s = session(further_tmp_root)
    best = call(s, best=True)  # nothing stored: computes the first
    assert best.increment == 1 and calls.count("chain") == 1
    assert call(s).increment == 1  # the cell's default instruction is best=True
    assert call(s, at_least=4).increment == 4 and calls.count("chain") == 4
    assert call(s, at_least=2).increment == 4 and calls.count("chain") == 4  # the most stored
    more = call(s, more=3)
    assert (more.increment, more.total) == (7, 28) and calls.count("chain") == 7
    assert call(s, best=True).increment == 7 and calls.count("chain") == 7


def test_the_instruction_is_not_identity(further_tmp_root, calls):
    s = session(further_tmp_root)
    exact = call(s, exactly=6)
    assert call(s, at_least=6).key == exact.key == call(s, best=True).key
    assert calls.count("chain") == 6
    other = s.call("inc_demo.chain", scale=2, increments=Increments(exactly=6))
    assert other.key != exact.key and other.total == 42
    provenance = s.store.read_provenance("inc_demo", "chain", exact.key)
    assert provenance.extra["increment"] == 6
    assert exact.key == increment_key(provenance.extra["increment_base"], 6)


def test_earlier_increments_load_and_edges_share_them(further_tmp_root, calls):
    s = session(further_tmp_root)
    ten = call(s, exactly=10)
    assert [s.increment(ten, i).total for i in (1, 2, 10)] == [1, 3, 55]
    with pytest.raises(StoreError):
        s.increment(ten, 11)  # not stored
    with pytest.raises(IncrementsError):
        s.increment(ten, 0)
    # an edge asking for at least 5 uses the 10 stored: nothing recomputed
    assert s.call("inc_demo.reader").index == 10 and calls.count("chain") == 10
    assert s.call("inc_demo.summary").indices == [10, 10] and calls.count("chain") == 10


def test_two_edges_in_one_fresh_plan_share_increments(further_tmp_root, calls):
    s = session(further_tmp_root, mode=Mode.LOCAL, max_workers=2)
    # planned against an empty store: at_least=5 resolves to 5, exactly=10 to 10; one chain
    assert s.call("inc_demo.summary").indices == [10, 5]
    assert calls.count("chain") == 10


def test_counting_stored_increments_is_a_few_stats(further_tmp_root, monkeypatch):
    s = session(further_tmp_root)
    ten = call(s, exactly=37)
    base = s.store.read_provenance("inc_demo", "chain", ten.key).extra["increment_base"]
    probed = []
    real = s.store.is_stored
    monkeypatch.setattr(s.store, "is_stored", lambda *a: probed.append(a) or real(*a))
    assert StoredIncrements(s.store)(Chain, base) == 37
    assert len(probed) <= 2 * 6 + 2  # galloping + binary search, not a scan


def test_bad_increments_are_specific_errors(further_registry, further_tmp_root):
    for bad in ({}, {"exactly": 2, "more": 1}, {"exactly": 0}, {"at_least": -1}, {"more": True}):
        with pytest.raises(IncrementsError, match="Increments"):
            Increments(**bad)
    with pytest.raises(IncrementsError, match="exactly one"):
        Increments(best=True, exactly=3)
    s = session(further_tmp_root)
    with pytest.raises(IncrementsError, match="not an IncrementingCell"):
        s.call("inc_demo.reader", increments=Increments(exactly=1))
    with pytest.raises(IncrementsError, match="Increments"):
        Req("chain", increments=5)
    with pytest.raises(CellDefinitionError, match="make_increment"):

        class Wrong(IncrementingCell, project=inc):
            contributions = {"x": int}

            def make(self):
                return {"x": 1}

    with pytest.raises(CellDefinitionError, match="reserved"):

        class Named(Cell, project=inc):
            class Specs(Specs):
                increments: int = 1

            contributions = {"x": int}

            def make(self):
                return {"x": 1}

    other = Project("inc_bad")

    class Plain(Cell, project=other):
        contributions = {"x": int}

        def make(self):
            return {"x": 1}

    class Asks(Cell, project=other):
        req_cells = {"p": Req("plain", increments=Increments(exactly=2))}
        contributions = {"x": int}

        def make(self):
            return {"x": 1}

    with pytest.raises(IncrementsError, match=r"inc_bad\.plain is not an IncrementingCell"):
        Session(other, root=further_tmp_root, progress=False).plan("inc_bad.asks")


_RUN = """
import sys
from further_dagster import Increments, Session
from tests.engine.test_increments import inc
Session(inc, root=sys.argv[1], progress=False).call(
    "inc_demo.chain", increments=Increments(exactly=40)
)
"""


def test_kill_9_mid_run_keeps_every_committed_increment(further_tmp_root, calls):
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "FURTHER_TEST_DELAY": "0.05",
    }
    proc = subprocess.Popen([sys.executable, "-c", _RUN, str(further_tmp_root)], env=env)
    try:
        deadline = time.monotonic() + 120
        while calls.count("chain") < 12 and proc.poll() is None:
            assert time.monotonic() < deadline, "the run never reached increment 12"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    started = calls.count("chain")
    s = session(further_tmp_root)
    best = call(s, best=True)  # the last committed increment, computing nothing
    committed = best.increment
    assert started - 1 <= committed <= started and calls.count("chain") == started
    assert [s.increment(best, i).total for i in (1, committed)] == [
        1,
        committed * (committed + 1) // 2,
    ]
    forty = call(s, exactly=40)
    assert forty.total == 820
    assert calls.count("chain") == started + (40 - committed)  # nothing committed redone
