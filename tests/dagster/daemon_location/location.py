"""A small code location for the daemon end-to-end test; the test runs a temporary copy of it.

readings (resource: data/readings.txt, released by content hash) -> stats -> report
static ----------------------------------------------------------------------/
"""

from pathlib import Path

from further_dagster import Cell, Project, Req, ResourceCell, Specs, build_definitions, file_release
from further_dagster.dagster import further_executor_def

HERE = Path(__file__).resolve().parent

daemon_demo = Project("daemon_demo")


class Readings(ResourceCell, project=daemon_demo):
    """Numbers, one per line, in data/readings.txt."""

    class Specs(Specs):
        file: str = "readings.txt"

    contributions = {"values": list}

    @classmethod
    def get_release(cls, specs):
        return file_release(HERE / "data" / specs.file, content=True)

    def make(self):
        text = (HERE / "data" / self.specs.file).read_text()
        return {"values": [float(line) for line in text.split()]}


class Stats(Cell, project=daemon_demo):
    req_cells = {"readings": Req("readings")}
    contributions = {"total": float, "n": int}

    def make(self):
        values = self.inputs["readings"].values
        return {"total": float(sum(values)), "n": len(values)}


class Static(Cell, project=daemon_demo):
    contributions = {"value": int}

    def make(self):
        return {"value": 1}


class Report(Cell, project=daemon_demo):
    req_cells = {"stats": Req("stats"), "static": Req("static")}
    contributions = {"line": str}

    def make(self):
        stats = self.inputs["stats"]
        return {"line": f"{stats.n} readings, total {stats.total} ({self.inputs['static'].value})"}


defs = build_definitions(
    daemon_demo,
    executor=further_executor_def().configured({"inner": "in_process"}),
    release_sensor_interval=1,
)
