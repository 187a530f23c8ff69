"""The cells of a 100-point sweep of a trivial cell, for bench/bench_slurm.py.

`point` (i swept over 0..N-1) -> `total` (inline: collects the sweep). N is
$FURTHER_BENCH_SWEEP (default 100). The cells live in their own module, apart from the
Definitions (bench/slurm_sweep.py): a Slurm task imports this module to unpickle its instance,
and should not pay for importing Dagster.
"""

from __future__ import annotations

import os

from further_dagster import VAR, Cell, Project, ProjectParams, Req, Specs

N = int(os.environ.get("FURTHER_BENCH_SWEEP", "100"))
bench_sweep = Project("bench_sweep", description=f"a {N}-point sweep of a trivial cell")


class Point(Cell, project=bench_sweep):
    """i squared."""

    class Specs(Specs):
        i: int = 0

    contributions = {"value": int}

    def make(self):
        return {"value": self.specs.i * self.specs.i}


class Total(Cell, project=bench_sweep):
    """The sum over the sweep."""

    in_parallel = False
    req_cells = {"points": Req("point", i=VAR(list(range(N))))}
    contributions = {"value": int}

    def make(self):
        return {"value": sum(p.value for p in self.inputs["points"])}


# --- the 3-level sweep of `bench_slurm.py --static`: 10 x 10 points over 3 chained cells ----

SIDE = int(os.environ.get("FURTHER_BENCH_SIDE", "10"))
GRID = {"i": VAR(list(range(SIDE))), "j": VAR(list(range(SIDE)))}


class GridParams(ProjectParams):
    i: int = 0
    j: int = 0


bench_grid = Project("bench_grid", params=GridParams, description="3 cells over a 10x10 grid")


class GridSpecs(Specs):
    i: int = 0
    j: int = 0


class Load(Cell, project=bench_grid):
    Specs = GridSpecs
    project_params = ("i", "j")
    contributions = {"value": int}

    def make(self):
        return {"value": self.specs.i * SIDE + self.specs.j}


class Fit(Cell, project=bench_grid):
    Specs = GridSpecs
    project_params = ("i", "j")
    req_cells = {"load": Req("load")}
    contributions = {"value": int}

    def make(self):
        return {"value": self.inputs["load"].value + 1}


class Score(Cell, project=bench_grid):
    Specs = GridSpecs
    project_params = ("i", "j")
    req_cells = {"fit": Req("fit")}
    contributions = {"value": int}

    def make(self):
        return {"value": self.inputs["fit"].value * 2}


# --- `bench_slurm.py --steps`: N independent cells and one that joins them -----------------

bench_many = Project("bench_many", description="six independent cells and a join")


class _Leaf(Cell, abstract=True):
    """A trivial independent cell (each subclass is one asset, one Dagster step)."""

    contributions = {"value": int}

    def make(self):
        return {"value": len(self.name)}


class Leaf0(_Leaf, project=bench_many):
    """Independent."""


class Leaf1(_Leaf, project=bench_many):
    """Independent."""


class Leaf2(_Leaf, project=bench_many):
    """Independent."""


class Leaf3(_Leaf, project=bench_many):
    """Independent."""


class Leaf4(_Leaf, project=bench_many):
    """Independent."""


class Leaf5(_Leaf, project=bench_many):
    """Independent."""


class Join(Cell, project=bench_many):
    """The sum of the six (a Slurm job of its own: the dependent level)."""

    req_cells = {f"leaf{k}": Req(f"leaf{k}") for k in range(6)}
    contributions = {"value": int}

    def make(self):
        return {"value": sum(self.inputs[f"leaf{k}"].value for k in range(6))}
