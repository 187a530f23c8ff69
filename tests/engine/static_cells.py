"""Cells for the static-chapter tests (DASK_STATIC_DAG, SLURM): a sweep of leaves, one that
fails, a middle level over groups of leaves, gathers, and an INLINE cell that splits a run into
chapters. make() appends to $FURTHER_TEST_CALLS (tests/engine/cells.py) so tests count calls in
any process."""

from __future__ import annotations

from typing import Any

from further_dagster import VAR, Cell, Project, Req, Specs
from tests.engine.cells import record

static_demo = Project("static_demo")

FAILING = 3


class Leaf(Cell, project=static_demo):
    class Specs(Specs):
        k: int = 0

    contributions = {"v": int}

    def make(self) -> dict[str, Any]:
        record("leaf", self.key)
        if self.specs.k == FAILING:
            raise ValueError(f"leaf refuses k={self.specs.k}")
        return {"v": self.specs.k}


class MidA(Cell, project=static_demo):
    req_cells = {"leaves": Req("leaf", k=VAR([0, 1, 2]))}
    contributions = {"v": int}

    def make(self) -> dict[str, Any]:
        record("mid", self.key)
        return {"v": sum(leaf.v for leaf in self.inputs["leaves"])}


class MidB(MidA, project=static_demo):
    """Needs the failing leaf: blocked."""

    req_cells = {"leaves": Req("leaf", k=VAR([3, 4]))}


class MidC(MidA, project=static_demo):
    req_cells = {"leaves": Req("leaf", k=VAR([4, 5]))}


class Top(Cell, project=static_demo):
    """Needs the failing leaf through mid_b: blocked."""

    req_cells = {"a": Req("mid_a"), "b": Req("mid_b")}
    contributions = {"total": int}

    def make(self) -> dict[str, Any]:
        record("top", self.key)
        return {"total": self.inputs["a"].v + self.inputs["b"].v}


class Good(Cell, project=static_demo):
    req_cells = {"a": Req("mid_a"), "c": Req("mid_c")}
    contributions = {"total": int}

    def make(self) -> dict[str, Any]:
        record("good", self.key)
        return {"total": self.inputs["a"].v + self.inputs["c"].v}


class Pause(Cell, project=static_demo):
    """INLINE between two static regions: the region above it is a second chapter."""

    in_parallel = False
    req_cells = {"good": Req("good")}
    contributions = {"total": int}

    def make(self) -> dict[str, Any]:
        record("pause", self.key)
        return {"total": self.inputs["good"].total}


class After(Cell, project=static_demo):
    class Specs(Specs):
        j: int = 0

    req_cells = {"pause": Req("pause")}
    contributions = {"v": int}

    def make(self) -> dict[str, Any]:
        record("after", self.key)
        return {"v": self.inputs["pause"].total + self.specs.j}


class Last(Cell, project=static_demo):
    req_cells = {"after": Req("after", j=VAR([1, 2, 3]))}
    contributions = {"total": int}

    def make(self) -> dict[str, Any]:
        record("last", self.key)
        return {"total": sum(a.v for a in self.inputs["after"])}
