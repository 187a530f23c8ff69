"""Session calls under project_inits.yaml labels: values, merges, keys, precedence."""

import pytest

from further_dagster import Cell, Project, ProjectParams, Req, Session, Specs
from further_dagster.errors import InitError
from tests.engine.cells import record

pytestmark = pytest.mark.unit

INITS = """\
fast:
  domain: speed
  cell_specs:
    data: {n: 2}
thorough:
  domain: speed
  cell_specs:
    data: {n: 6}
reseeded:
  domain: randomness
  project_specs: {seed: 5}
same:
  cell_specs:
    data: {n: 4}
"""


@pytest.fixture
def labelled(tmp_path, further_registry):
    path = tmp_path / "project_inits.yaml"
    path.write_text(INITS)

    class Params(ProjectParams):
        seed: int = 0

    project = Project("labels_demo", params=Params, inits=path)

    class Data(Cell, project=project):
        class Specs(Specs):
            n: int = 4
            seed: int = 0

        project_params = ("seed",)
        contributions = {"values": list}

        def make(self):
            record("data", self.key)
            return {"values": [self.specs.seed + i for i in range(self.specs.n)]}

    class Total(Cell, project=project):
        req_cells = {"data": Req("data", n=3)}  # an edge value: a label sits above it
        contributions = {"total": int}

        def make(self):
            record("total", self.key)
            return {"total": sum(self.inputs["data"].values)}

    return project


def test_labels_set_values_and_merge_across_domains(labelled, further_tmp_root, calls):
    session = Session(labelled, root=further_tmp_root, progress=False)
    assert session.call("labels_demo.total").total == 0 + 1 + 2  # the edge's n=3
    assert session.call("labels_demo.total", project_init_label="fast").total == 0 + 1
    assert session.call("labels_demo.total", project_init_label="thorough").total == 15
    merged = session.call("labels_demo.total", project_init_label=["fast", "reseeded"])
    assert merged.total == 5 + 6
    # the call's own values stay above the label's
    own = session.call(
        "labels_demo.total", project_init_label="fast", specs={"labels_demo.data": {"n": 1}}
    )
    assert own.total == 0
    assert calls.count("total") == 5


def test_a_label_that_changes_nothing_reachable_computes_nothing(labelled, further_tmp_root, calls):
    session = Session(labelled, root=further_tmp_root, progress=False)
    plain = session.call("labels_demo.data")  # n=4 by default
    same = session.call("labels_demo.data", project_init_label="same")  # sets n=4 again
    assert same.key == plain.key and calls.count("data") == 1


def test_label_mistakes_are_clear(labelled, further_tmp_root):
    session = Session(labelled, root=further_tmp_root, progress=False)
    with pytest.raises(InitError, match="domain 'speed'"):
        session.call("labels_demo.total", project_init_label=["fast", "thorough"])
    with pytest.raises(InitError, match="unknown project_init_label 'slow'"):
        session.call("labels_demo.total", project_init_label="slow")


def test_the_labels_of_the_computing_call_are_in_the_record(labelled, further_tmp_root):
    import io

    session = Session(labelled, root=further_tmp_root, progress=False)
    result = session.call("labels_demo.total", project_init_label=["fast", "reseeded"])
    rows = session.query("SELECT cell, labels FROM instances ORDER BY cell")
    assert rows.values.tolist() == [
        ["data", '["fast", "reseeded"]'],
        ["total", '["fast", "reseeded"]'],
    ]
    out = io.StringIO()
    session.explain(result, file=out)
    assert "  labels    fast, reseeded\n" in out.getvalue()
    plain = session.call("labels_demo.data")  # no label: none recorded
    row = session.query(f"SELECT labels FROM instances WHERE key = '{plain.key}'")
    assert row.values.tolist() == [[None]]
