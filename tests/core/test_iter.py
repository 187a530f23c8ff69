"""ITER loops with call switches: definition checks, unrolling, memoization per iteration."""

import pytest

from further_dagster import DYN, ITER, VAR, Cell, Project, Req, Session, Specs
from further_dagster.core.graph import DefinitionGraph
from further_dagster.errors import (
    ConfigurationError,
    DependencyCycleError,
    ParameterKindError,
    SwitchError,
    UnrollLimitError,
)
from tests.engine.cells import record

pytestmark = pytest.mark.unit

it = Project("iter_demo")


class Refine(Cell, project=it):
    """x_n = x_{n-1} * (1 - step), x_0 = 1."""

    class Specs(Specs):
        iteration: int = 5
        step: float = 0.1

    req_cells = {"previous": Req("refine", iteration=ITER(-1), switch=lambda s: s.iteration > 0)}
    contributions = {"x": float, "first": bool}

    def make(self):
        record("refine", self.key)
        prev = self.inputs["previous"]  # None where the switch is off
        x = prev.x if prev is not None else 1.0
        return {"x": x * (1 - self.specs.step), "first": prev is None}


class EStep(Cell, project=it):
    """One half of a two-cell loop: requires the M-step of the same round."""

    class Specs(Specs):
        round: int = 3

    req_cells = {"m": Req("m_step", round=ITER(0))}  # the same round
    contributions = {"value": int}

    def make(self):
        record("e_step", self.key)
        return {"value": self.inputs["m"].value + 1}


class MStep(Cell, project=it):
    class Specs(Specs):
        round: int = 3

    req_cells = {"e": Req("e_step", round=ITER(-1), switch=lambda s: s.round > 0)}
    contributions = {"value": int}

    def make(self):
        record("m_step", self.key)
        e = self.inputs["e"]
        return {"value": 0 if e is None else e.value * 2}


class Tail(Cell, project=it):
    """A plain edge with a switch: present only for long runs."""

    class Specs(Specs):
        n: int = 1

    req_cells = {"refine": Req("refine", iteration=2, switch=lambda s: s.n > 5)}
    contributions = {"has": bool}

    def make(self):
        return {"has": self.inputs["refine"] is not None}


def session(root):
    return Session(it, root=root, progress=False)


def test_iter_unrolls_and_computes_only_new_iterations(further_tmp_root, calls):
    s = session(further_tmp_root)
    five = s.call("iter_demo.refine")
    assert five.x == pytest.approx(0.9**6)
    assert calls.count("refine") == 6  # iterations 0..5, each its own instance
    eight = s.call("iter_demo.refine", iteration=8)
    assert eight.x == pytest.approx(0.9**9)
    assert calls.count("refine") == 9  # only 6, 7, 8
    three = s.call("iter_demo.refine", iteration=3)
    assert calls.count("refine") == 9 and three.x == pytest.approx(0.9**4)
    first = s.call("iter_demo.refine", iteration=0)
    assert first.first is True and three.first is False
    # the same iteration reached through the loop or called directly is one key
    plan = s.plan("iter_demo.refine", iteration=5)
    keys = {i.specs.iteration: i.key for i in plan.instances}
    assert len(set(keys.values())) == 6 and keys[3] == three.key


def test_a_loop_of_two_cells(further_tmp_root, calls):
    s = session(further_tmp_root)
    # m0 = 0; e_r = m_r + 1; m_r = e_{r-1} * 2
    assert s.call("iter_demo.e_step", round=3).value == 15
    assert calls.count("e_step") == 4 and calls.count("m_step") == 4
    assert s.call("iter_demo.e_step", round=4).value == 31
    assert calls.count("e_step") == 5 and calls.count("m_step") == 5


def test_switch_on_a_plain_edge(further_tmp_root):
    s = session(further_tmp_root)
    off, on = s.call("iter_demo.tail"), s.call("iter_demo.tail", n=6)
    assert off.has is False and on.has is True
    assert "refine" not in s.plan("iter_demo.tail").roots[0].deps


def test_addressed_path_through_iter_edges(further_tmp_root):
    s = session(further_tmp_root)
    plan = s.plan("iter_demo.refine", addressed={"previous/previous": {"step": 0.5}})
    steps = {i.specs.iteration: i.specs.step for i in plan.instances}
    assert steps == {5: 0.1, 4: 0.1, 3: 0.5, 2: 0.1, 1: 0.1, 0: 0.1}


def test_a_deep_loop_resolves_without_recursion(further_tmp_root):
    plan = session(further_tmp_root).plan("iter_demo.refine", iteration=5000)
    assert len(plan.missing) == 5001


def test_cycles_need_an_iter_edge(further_registry):
    loop = Project("loop_demo")

    class A(Cell, project=loop):
        class Specs(Specs):
            i: int = 1

        req_cells = {"b": Req("b", switch=lambda s: s.i > 0)}  # a switch alone is not ITER
        contributions = {"x": int}

        def make(self):
            return {"x": 1}

    class B(Cell, project=loop):
        class Specs(Specs):
            i: int = 1

        req_cells = {"a": Req("a")}
        contributions = {"x": int}

        def make(self):
            return {"x": 1}

    with pytest.raises(DependencyCycleError, match=r"loop_demo\.a -> loop_demo\.b.*ITER"):
        DefinitionGraph([loop])


def test_iter_definition_errors(further_registry):
    with pytest.raises(ParameterKindError, match="needs a call switch"):
        Req("refine", iteration=ITER(-1))
    with pytest.raises(ParameterKindError, match="give a number"):
        ITER("1")
    assert Req("refine", iteration=ITER(0)).switch is None  # the same round: no switch needed
    with pytest.raises(ParameterKindError, match="ITER and VAR"):
        Req("refine", iteration=ITER(-1), step=VAR([1, 2]), switch=lambda s: True)
    with pytest.raises(ParameterKindError, match="switch on a DYN edge"):
        Req("refine", step=DYN, switch=lambda s: True)
    with pytest.raises(ParameterKindError, match="not callable"):
        Req("refine", switch=True)
    bad = Project("iter_bad")

    class Target(Cell, project=bad):
        class Specs(Specs):
            iteration: int = 0

        contributions = {"x": int}

        def make(self):
            return {"x": 1}

    class Caller(Cell, project=bad):
        req_cells = {"t": Req("target", iteration=ITER(-1), switch=lambda s: True)}
        contributions = {"x": int}

        def make(self):
            return {"x": 1}

    with pytest.raises(ParameterKindError, match=r"iter_bad\.caller's own 'iteration'"):
        DefinitionGraph([bad])


def test_switch_that_raises_names_cell_and_edge(further_registry, further_tmp_root):
    broken = Project("iter_broken")

    class Loop(Cell, project=broken):
        class Specs(Specs):
            n: int = 2

        req_cells = {"prev": Req("loop", n=ITER(-1), switch=lambda s: 1 / (s.n - 1) > 0)}
        contributions = {"x": int}

        def make(self):
            return {"x": 1}

    class Vague(Cell, project=broken):
        class Specs(Specs):
            n: int = 2

        req_cells = {"prev": Req("vague", n=ITER(-1), switch=lambda s: None)}
        contributions = {"x": int}

        def make(self):
            return {"x": 1}

    s = Session(broken, root=further_tmp_root, progress=False)
    with pytest.raises(SwitchError, match=r"iter_broken\.loop\.req_cells\['prev'\].*ZeroDivision"):
        s.plan("iter_broken.loop")
    with pytest.raises(SwitchError, match=r"returned None"):
        s.plan("iter_broken.vague")


def test_unrolling_past_the_bound_names_the_cell(further_registry, further_tmp_root, monkeypatch):
    runaway = Project("iter_runaway")

    class Walk(Cell, project=runaway):
        class Specs(Specs):
            n: int = -1

        req_cells = {"prev": Req("walk", n=ITER(-1), switch=lambda s: s.n != 0)}  # never 0
        contributions = {"x": int}

        def make(self):
            return {"x": 1}

    monkeypatch.setenv("FURTHER_MAX_UNROLL", "20")
    s = Session(runaway, it, root=further_tmp_root, progress=False)
    with pytest.raises(UnrollLimitError, match=r"iter_runaway\.walk.*past 20 steps"):
        s.plan("iter_runaway.walk")
    with pytest.raises(UnrollLimitError, match="FURTHER_MAX_UNROLL"):
        s.plan("iter_demo.refine", iteration=30)
    assert len(s.plan("iter_demo.refine", iteration=20).instances) == 21
    monkeypatch.setenv("FURTHER_MAX_UNROLL", "0")
    with pytest.raises(ConfigurationError, match="FURTHER_MAX_UNROLL"):
        s.plan("iter_demo.refine")


def test_a_session_value_on_the_iter_field_is_an_error(further_tmp_root):
    s = session(further_tmp_root)
    with pytest.raises(UnrollLimitError, match="cannot advance"):
        s.plan("iter_demo.refine", specs={"iter_demo.refine": {"iteration": 3}})
    # the call's own value is the root's only: fine
    assert s.plan("iter_demo.refine", iteration=2).roots[0].specs.iteration == 2
