"""A code location whose runs pick transformers in run config
(tests/dagster/test_transformers_dagster.py)."""

import dagster as dg

from further_dagster import Cell, Project, Req, Specs, Transformer, build_definitions
from tests.engine.cells import record

dag_tf = Project("dag_tf")


class Data(Cell, project=dag_tf):
    class Specs(Specs):
        n: int = 4
        scale: float = 1.0

    contributions = {"values": list}

    def make(self):
        record("data", self.key)
        return {"values": [i * self.specs.scale for i in range(self.specs.n)]}


class Fit(Cell, project=dag_tf):
    req_cells = {"data": Req("data")}
    contributions = {"total": float}

    def make(self):
        record("fit", self.key)
        return {"total": sum(self.inputs["data"].values)}


class Report(Cell, project=dag_tf):
    req_cells = {"fit": Req("fit"), "raw": Req("data")}
    contributions = {"total": float, "raw": float}

    def make(self):
        record("report", self.key)
        return {"total": self.inputs["fit"].total, "raw": sum(self.inputs["raw"].values)}


class Rescale(Transformer, project=dag_tf):
    """Multiplies the data's scale by a factor."""

    logic_version = 3

    class Specs(Specs):
        factor: float = 0.5

    def transform(self, values):
        return {"scale": values["scale"] * self.specs.factor}


class Unregistered(Transformer):
    """Selected by its import path only."""

    def transform(self, values):
        return {"n": 2}


defs = build_definitions(dag_tf, executor=dg.in_process_executor, release_sensor_interval=None)


def _skip_defs():
    from further_dagster.dagster import further_executor_def

    return build_definitions(
        dag_tf,
        executor=further_executor_def().configured({"inner": "in_process"}),
        release_sensor_interval=None,
    )


# The same cells under the skip-cached executor (it must plan transformed instances too).
skip_defs = _skip_defs()
