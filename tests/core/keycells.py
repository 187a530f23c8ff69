"""Cells whose logic keys the golden tests pin. Do not change them: the pinned keys would."""

from further_dagster import Cell, Opts, Project, ProjectParams, Req, Specs


class KeyParams(ProjectParams):
    seed: int = 7


keys_demo = Project("keys_demo", params=KeyParams)


class Source(Cell, project=keys_demo):
    logic_version = 1

    class Specs(Specs):
        n: int = 10
        scale: float = 1.0
        seed: int = 0

    class Opts(Opts):
        verbose: bool = False

    project_params = ("seed",)
    contributions = {"value": float}

    def make(self):
        return {"value": self.specs.n * self.specs.scale}


class Double(Cell, project=keys_demo):
    logic_version = "2"

    class Specs(Specs):
        label: str = "x"

    req_cells = {"src": Req("source", n=3)}
    contributions = {"value": float}

    def make(self):
        return {"value": 2 * self.inputs["src"].value}
