"""A code location with an archived project version beside the current one, and a caller
whose declared range picks the archived one."""

import dagster as dg

from further_dagster import Cell, Project, Req, Specs, build_definitions

dag_lib_old = Project("dag_lib", version="1.4", archived=True)


class FitOld(Cell, project=dag_lib_old, name="fit"):
    class Specs(Specs):
        alpha: float = 1.0

    contributions = {"impl": str}

    def make(self):
        return {"impl": f"lib1.4:{self.specs.alpha}"}


dag_lib = Project("dag_lib", version="2.0")


class Fit(Cell, project=dag_lib):
    class Specs(Specs):
        alpha: float = 1.0

    contributions = {"impl": str}

    def make(self):
        return {"impl": f"lib2.0:{self.specs.alpha}"}


dag_app = Project("dag_app", calls={"dag_lib": "<2"})


class Use(Cell, project=dag_app):
    req_cells = {"fit": Req("dag_lib.fit")}
    contributions = {"impl": str}

    def make(self):
        return {"impl": "app+" + self.inputs["fit"].impl}


defs = build_definitions(
    dag_lib, dag_app, executor=dg.in_process_executor, release_sensor_interval=None
)
