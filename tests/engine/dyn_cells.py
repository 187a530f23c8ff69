"""Cells with DYN / STUB / RAND edges (module level, so process pools can import them)."""

from further_dagster import CONST, DYN, RAND, STUB, Cell, Project, Req, Specs
from tests.engine.cells import record

dyn = Project("dyn")


class Fit(Cell, project=dyn):
    class Specs(Specs):
        alpha: float = 1.0
        n: int = 1

    contributions = {"loss": float}

    def make(self):
        record("fit", self.key)
        return {"loss": (self.specs.alpha - 0.3) ** 2 * self.specs.n}


class Search(Cell, project=dyn):
    """Chooses alphas at runtime: a coarse grid, then a refinement around the best."""

    class Specs(Specs):
        width: float = 0.2

    req_cells = {"fit": Req("fit", alpha=DYN, n=CONST(2))}
    contributions = {"best": float}

    def make(self):
        record("search", self.key)
        coarse = [0.0, 0.5, 1.0]
        losses = {a: self.call("fit", alpha=a).loss for a in coarse}
        best = min(losses, key=losses.get)
        for a in (best - self.specs.width, best + self.specs.width):
            losses[round(a, 6)] = self.call("fit", alpha=round(a, 6)).loss
        return {"best": min(losses, key=losses.get)}


class Draft(Cell, project=dyn):
    req_cells = {"fit": Req("fit", alpha=STUB)}
    contributions = {"loss": float}

    def make(self):
        return {"loss": self.call("fit", alpha=0.5).loss}


class Sim(Cell, project=dyn):
    class Specs(Specs):
        seed: int = 0

    contributions = {"seed": int}

    def make(self):
        record("sim", self.key)
        return {"seed": self.specs.seed}


class Ensemble(Cell, project=dyn):
    class Specs(Specs):
        size: int = 1

    req_cells = {"sim": Req("sim", seed=RAND(0, 10**6, seed=42))}
    contributions = {"seed": int}

    def make(self):
        record("ensemble", self.key)
        return {"seed": self.inputs["sim"].seed}
