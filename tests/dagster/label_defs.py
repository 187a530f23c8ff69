"""A code location compiled under project_inits.yaml labels (tests/dagster/test_labels.py)."""

from pathlib import Path

import dagster as dg

from further_dagster import Cell, Project, Req, Specs, build_definitions
from tests.engine.cells import record

dag_labels = Project("dag_labels", inits=Path(__file__).with_name("label_inits.yaml"))


class Data(Cell, project=dag_labels):
    class Specs(Specs):
        n: int = 4

    contributions = {"values": list}

    def make(self):
        record("data", self.key)
        return {"values": list(range(self.specs.n))}


class Total(Cell, project=dag_labels):
    req_cells = {"data": Req("data")}
    contributions = {"total": int}

    def make(self):
        record("total", self.key)
        return {"total": sum(self.inputs["data"].values)}


def defs_for(label):
    return build_definitions(
        dag_labels,
        project_init_label=label,
        executor=dg.in_process_executor,
        release_sensor_interval=None,
    )
