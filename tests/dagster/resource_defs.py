"""A code location with a resource cell, for the Dagster tests of releases and the sensor.

feed(name=a) -> scaled (factor swept 1..3) -> summary -> report
feed(name=a) -> shifted (k swept 1..2)  ---------------/
feed(name=b) -> side -------------------------------/
static -------------------------------------------/

Tests set the feed's state in RELEASES (name -> release) and DATA (release -> rows).
"""

from further_dagster import VAR, Cell, Project, Req, ResourceCell, Specs, build_definitions
from further_dagster.dagster import further_executor_def
from tests.engine.cells import record

dag_res = Project("dag_res", description="Dagster resource-cell test project")

RELEASES: dict[str, str] = {"a": "r1", "b": "r1"}
DATA: dict[str, list[int]] = {"r1": [1, 2, 3], "r2": [10, 20, 30], "r3": [5]}


class Feed(ResourceCell, project=dag_res):
    """An external feed."""

    class Specs(Specs):
        name: str = "a"

    contributions = {"rows": list}

    @classmethod
    def get_release(cls, specs):
        return RELEASES[specs.name]

    def make(self):
        record("feed", self.key)
        return {"rows": list(DATA[self.release])}


class Scaled(Cell, project=dag_res):
    class Specs(Specs):
        factor: int = 1

    req_cells = {"feed": Req("feed")}
    contributions = {"rows": list}

    def make(self):
        record("scaled", self.key)
        return {"rows": [self.specs.factor * r for r in self.inputs["feed"].rows]}


class Summary(Cell, project=dag_res):
    req_cells = {"scaled": Req("scaled", factor=VAR([1, 2, 3]))}
    contributions = {"totals": list}

    def make(self):
        record("summary", self.key)
        return {"totals": [sum(s.rows) for s in self.inputs["scaled"]]}


class Shifted(Cell, project=dag_res):
    class Specs(Specs):
        k: int = 0

    req_cells = {"feed": Req("feed")}
    contributions = {"rows": list}

    def make(self):
        record("shifted", self.key)
        return {"rows": [r + self.specs.k for r in self.inputs["feed"].rows]}


class Side(Cell, project=dag_res):
    req_cells = {"feed": Req("feed", name="b")}
    contributions = {"n": int}

    def make(self):
        record("side", self.key)
        return {"n": len(self.inputs["feed"].rows)}


class Static(Cell, project=dag_res):
    contributions = {"value": int}

    def make(self):
        record("static", self.key)
        return {"value": 7}


class Report(Cell, project=dag_res):
    req_cells = {
        "summary": Req("summary"),
        "shifted": Req("shifted", k=VAR([1, 2])),
        "side": Req("side"),
        "static": Req("static"),
    }
    contributions = {"value": int}

    def make(self):
        record("report", self.key)
        shifted = sum(sum(s.rows) for s in self.inputs["shifted"])
        return {
            "value": sum(self.inputs["summary"].totals)
            + shifted
            + self.inputs["side"].n
            + self.inputs["static"].value
        }


_in_process = further_executor_def().configured({"inner": "in_process"})

# The whole project (two partitions definitions below the feed).
defs = build_definitions(dag_res, executor=_in_process)
# Only the summary branch: one partitions definition below the feed.
summary_defs = build_definitions(dag_res, calls=[("dag_res.summary", {})], executor=_in_process)
