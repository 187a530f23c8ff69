"""A code location for the Dagster tests: a chain, a swept cell and a plain downstream asset."""

import dagster as dg

from further_dagster import VAR, Cell, Project, Req, Specs, build_definitions
from tests.engine.cells import record

dag_demo = Project("dag_demo", description="Dagster test project")


class Src(Cell, project=dag_demo):
    """The source numbers."""

    logic_version = 3

    class Specs(Specs):
        n: int = 4

    contributions = {"values": list}

    def make(self):
        record("src", self.key)
        return {"values": list(range(self.specs.n))}


class Power(Cell, project=dag_demo):
    """Raise every value to a power."""

    class Specs(Specs):
        p: int = 1

    req_cells = {"src": Req("src")}
    contributions = {"values": list}

    def make(self):
        record("power", self.key)
        if self.specs.p == 99:
            raise ValueError("p=99 is not allowed")
        return {"values": [v**self.specs.p for v in self.inputs["src"].values]}


class Summary(Cell, project=dag_demo):
    """Sum of each power."""

    req_cells = {"powers": Req("power", p=VAR([1, 2, 3]))}
    contributions = {"totals": list}

    def make(self):
        record("summary", self.key)
        return {"totals": [sum(p.values) for p in self.inputs["powers"]]}


def _consumer():
    @dg.asset(
        key=["dag_demo", "plain_consumer"],
        ins={"summary": dg.AssetIn(key=["dag_demo", "summary"])},
        io_manager_key="io_manager",
    )
    def consumer(summary) -> int:
        return int(summary.totals[-1])

    return consumer


defs = build_definitions(dag_demo, assets=[_consumer()])


def _in_process_defs():
    from further_dagster.dagster import further_executor_def

    return build_definitions(
        dag_demo, executor=further_executor_def().configured({"inner": "in_process"})
    )


# The same cells with the skip-cached wrapper around Dagster's in-process executor.
in_process_defs = _in_process_defs()
