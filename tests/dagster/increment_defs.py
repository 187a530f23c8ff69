"""A code location with an incrementing cell (tests/dagster/test_increments.py)."""

import dagster as dg

from further_dagster import IncrementingCell, Increments, Project, build_definitions
from tests.engine.cells import record

dag_inc = Project("dag_inc")


class Walk(IncrementingCell, project=dag_inc):
    """A running sum: increment i adds i."""

    increments = Increments(at_least=3)
    contributions = {"total": int}

    def make_increment(self, previous):
        record("walk", self.key)
        return {"total": (previous.total if previous is not None else 0) + self.increment}


defs = build_definitions(dag_inc, executor=dg.in_process_executor, release_sensor_interval=None)
