"""A code location with an archived cell version beside the current one."""

import dagster as dg

from further_dagster import Cell, Project, Req, Specs, build_definitions

dag_versions = Project("dag_versions")


class FitV1(Cell, project=dag_versions, name="fit", archived=True):
    api_version = "1.4"

    class Specs(Specs):
        alpha: float = 1.0

    contributions = {"impl": str}

    def make(self):
        return {"impl": f"v1:{self.specs.alpha}"}


class Fit(Cell, project=dag_versions):
    api_version = "2.0"

    class Specs(Specs):
        alpha: float = 1.0

    contributions = {"impl": str}

    def make(self):
        return {"impl": f"v2:{self.specs.alpha}"}


class Compare(Cell, project=dag_versions):
    req_cells = {"old": Req("fit", version="<2"), "new": Req("fit")}
    contributions = {"both": str}

    def make(self):
        return {"both": self.inputs["old"].impl + "|" + self.inputs["new"].impl}


defs = build_definitions(
    dag_versions, executor=dg.in_process_executor, release_sensor_interval=None
)
