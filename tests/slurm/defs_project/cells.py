"""Cells of a code location laid out as the README shows (the package's `__init__` calls
`build_definitions`, the cells live here): a 3-level chain swept over (i, j), and a cell that
reports whether its Slurm task imported Dagster."""

from __future__ import annotations

import sys
from typing import Any

from further_dagster import Cell, Project, ProjectParams, Req, Specs


class ChainParams(ProjectParams):
    i: int = 0
    j: int = 0


slurm_chain = Project("slurm_chain", params=ChainParams)


class IJ(Specs):
    i: int = 0
    j: int = 0


class Load(Cell, project=slurm_chain):
    Specs = IJ
    project_params = ("i", "j")
    contributions = {"v": int}

    def make(self) -> dict[str, Any]:
        return {"v": self.specs.i * 10 + self.specs.j}


class Fit(Cell, project=slurm_chain):
    Specs = IJ
    project_params = ("i", "j")
    req_cells = {"load": Req("load")}
    contributions = {"v": int}

    def make(self) -> dict[str, Any]:
        return {"v": self.inputs["load"].v + 1}


class Score(Cell, project=slurm_chain):
    Specs = IJ
    project_params = ("i", "j")
    req_cells = {"fit": Req("fit")}
    contributions = {"v": int}

    def make(self) -> dict[str, Any]:
        return {"v": self.inputs["fit"].v * 2}


class Imports(Cell, project=slurm_chain):
    """What the task that ran make() had imported."""

    contributions = {"dagster": bool, "definitions": bool}

    def make(self) -> dict[str, Any]:
        package = sys.modules.get(__name__.rpartition(".")[0])
        return {
            "dagster": "dagster" in sys.modules,
            "definitions": package is not None and hasattr(package, "defs"),
        }


class FlakyLoad(Load, project=slurm_chain):
    """Fails at (1, 1): the fit and score above it wait on a task that never completes."""

    def make(self) -> dict[str, Any]:
        if (self.specs.i, self.specs.j) == (1, 1):
            raise ValueError("flaky_load refuses (1, 1)")
        return super().make()


class FlakyFit(Fit, project=slurm_chain):
    req_cells = {"load": Req("flaky_load")}


class FlakyScore(Score, project=slurm_chain):
    req_cells = {"fit": Req("flaky_fit")}
