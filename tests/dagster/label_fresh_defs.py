"""A code location whose label sets a resource cell's freshness (tests/dagster/test_labels.py).

Tests set the feed's current release in RELEASE["now"]."""

from pathlib import Path

import dagster as dg

from further_dagster import Cell, Project, Req, ResourceCell, build_definitions
from tests.engine.cells import record

dag_lfresh = Project("dag_lfresh", inits=Path(__file__).with_name("label_fresh_inits.yaml"))

RELEASE = {"now": "r1"}


class Feed(ResourceCell, project=dag_lfresh):
    contributions = {"release": str}

    @classmethod
    def get_release(cls, specs):
        record("feed_release", RELEASE["now"])
        return RELEASE["now"]

    def make(self):
        return {"release": self.release}


class Use(Cell, project=dag_lfresh):
    req_cells = {"feed": Req("feed")}
    contributions = {"release": str}

    def make(self):
        record("use", self.key)
        return {"release": self.inputs["feed"].release}


def fresh_defs(label=None):
    return build_definitions(
        dag_lfresh,
        project_init_label=label,
        executor=dg.in_process_executor,
        release_sensor_interval=None,
    )
