"""Recursive units: a loop of cells run round by round until the last one converges."""

import pytest

from further_dagster import ITER, Cell, Project, Req, Session, Specs
from further_dagster.core.units import RecursiveUnit
from further_dagster.errors import CellComputeError, CellDefinitionError
from tests.engine.cells import record

pytestmark = pytest.mark.unit

em = Project("unit_demo")


class EStep(Cell, project=em):
    """Halves the distance to the target, starting from the previous M-step (or 0)."""

    class Specs(Specs):
        round: int = 0
        target: float = 8.0
        step: float = 0.5  # of the distance; an E-step field the last cell lacks

    req_cells = {"m": Req("m_step", round=ITER(-1), switch=lambda s: s.round > 0)}
    contributions = {"x": float}

    def make(self):
        record("e_step", self.key)
        record("e_seen", f"{self.specs.round}:{self.specs.target}:{self.specs.step}")
        before = self.inputs["m"].x if self.inputs["m"] is not None else 0.0
        return {"x": before + (self.specs.target - before) * self.specs.step}


class MStep(Cell, project=em):
    class Specs(Specs):
        round: int = 0
        target: float = 8.0
        tol: float = 0.5

    req_cells = {"e": Req("e_step", round=ITER(0))}
    contributions = {"x": float, "converged": bool}

    def make(self):
        record("m_step", self.key)
        record("m_seen", f"{self.specs.round}:{self.specs.target}:{self.specs.tol}")
        x = self.inputs["e"].x
        return {"x": x, "converged": self.specs.target - x < self.specs.tol}


Em = RecursiveUnit("em", project=em, cells=("e_step", "m_step"), max_rounds=50)


class Uses(Cell, project=em):
    req_cells = {"em": Req("em", tol=0.1)}
    contributions = {"round": int}

    def make(self):
        return {"round": self.inputs["em"].round}


def test_the_unit_runs_rounds_until_converged_and_each_round_is_memoized(further_tmp_root, calls):
    s = Session(em, root=further_tmp_root, progress=False)
    result = s.call("unit_demo.em")
    # x: 4, 6, 7, 7.5, 7.75 -> converged (8 - x < 0.5) at round 4
    assert result.round == 4 and result.converged and result.x == 7.75
    assert calls.count("e_step") == 5 and calls.count("m_step") == 5
    assert s.call("unit_demo.em").round == 4 and calls.count("m_step") == 5
    # a caller depends on the unit like on a cell. Its tol reaches every m_step of every
    # round, so rounds 0..6 are new m_step instances; e_step has no tol, but from round 1 on
    # it requires a new m_step: only its round 0 is shared
    assert s.call("unit_demo.uses").round == 6  # 8 - 7.9375 < 0.1
    assert calls.count("e_step") == 5 + 6
    assert calls.count("m_step") == 12
    assert {seen for c, seen, *_ in calls.read() if c == "m_seen"} == {
        *(f"{r}:8.0:0.5" for r in range(5)),
        *(f"{r}:8.0:0.1" for r in range(7)),
    }


def test_the_units_specs_reach_every_cell_of_every_round(further_tmp_root, calls):
    s = Session(em, root=further_tmp_root, progress=False)
    # target is a field of both cells, step of the E-step only: the unit has both
    result = s.call("unit_demo.em", target=16.0, step=0.75)
    # x: 12, 15, 15.75 -> converged (16 - x < 0.5) at round 2
    assert result.round == 2 and result.x == 15.75
    assert calls.count("e_step") == 3 and calls.count("m_step") == 3
    e_seen = sorted(seen for c, seen, *_ in calls.read() if c == "e_seen")
    m_seen = sorted(seen for c, seen, *_ in calls.read() if c == "m_seen")
    assert e_seen == [f"{r}:16.0:0.75" for r in range(3)]
    assert m_seen == [f"{r}:16.0:0.5" for r in range(3)]
    # the rounds are the loop cells' own instances: a Session giving those values to every
    # cell (specs=) finds them stored
    every = {
        "unit_demo.e_step": {"target": 16.0, "step": 0.75},
        "unit_demo.m_step": {"target": 16.0},
    }
    assert s.call("unit_demo.m_step", round=2, specs=every).x == 15.75
    assert calls.count("e_step") == 3 and calls.count("m_step") == 3


def test_a_rerun_resumes_at_the_first_round_not_stored(further_tmp_root, calls):
    s = Session(em, root=further_tmp_root, progress=False)
    s.call("unit_demo.m_step", round=2)  # rounds 0..2 stored by a direct call
    assert calls.count("m_step") == 3
    assert s.call("unit_demo.em").round == 4
    assert calls.count("m_step") == 5 and calls.count("e_step") == 5


def test_exceeding_max_rounds_is_a_clear_error(further_registry, further_tmp_root):
    RecursiveUnit("slow", project=em, cells=("e_step", "m_step"), max_rounds=2)
    s = Session(em, root=further_tmp_root, progress=False)
    with pytest.raises(CellComputeError, match=r"unit_demo\.slow.*max_rounds=2"):
        s.call("unit_demo.slow")


def test_unit_definition_errors(further_registry):
    class Lonely(Cell, project=em):
        class Specs(Specs):
            round: int = 0

        contributions = {"converged": bool}

        def make(self):
            return {"converged": True}

    with pytest.raises(CellDefinitionError, match="not a loop"):
        RecursiveUnit("bad", project=em, cells=("e_step", "lonely"), max_rounds=5)
    with pytest.raises(CellDefinitionError, match="bool contribution 'converged'"):
        RecursiveUnit("bad2", project=em, cells=("m_step", "e_step"), max_rounds=5)
    with pytest.raises(CellDefinitionError, match="max_rounds"):
        RecursiveUnit("bad3", project=em, cells=("e_step", "m_step"), max_rounds=0)
    with pytest.raises(CellDefinitionError, match="no cell 'nope'"):
        RecursiveUnit("bad4", project=em, cells=("nope",), max_rounds=5)
