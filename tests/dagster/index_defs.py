"""A code location whose store keeps a SQL index (tests/dagster/test_index_metadata.py)."""

import dagster as dg

from further_dagster import VAR, Cell, Project, Req, Specs, build_definitions
from tests.engine.cells import record

dag_idx = Project("dag_idx")


class Data(Cell, project=dag_idx):
    class Specs(Specs):
        n: int = 2

    contributions = {"values": list}

    def make(self):
        record("data", self.key)
        return {"values": list(range(self.specs.n))}


class Total(Cell, project=dag_idx):
    """Sums the data of two sizes: `data` is a partitioned asset (one partition per n)."""

    class Specs(Specs):
        weight: int = 1

    req_cells = {"data": Req("data", n=VAR([2, 3]))}
    contributions = {"total": int}

    def make(self):
        record("total", self.key)
        return {"total": self.specs.weight * sum(sum(d.values) for d in self.inputs["data"])}


def defs_for(index_url):
    return build_definitions(
        dag_idx,
        index_url=index_url,
        executor=dg.in_process_executor,
        release_sensor_interval=None,
        asset_checks=False,
    )
