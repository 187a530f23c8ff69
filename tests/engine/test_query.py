"""QUERY: sweeps whose values come from the SQL index of stored results, and self.db."""

import pytest

from further_dagster import QUERY, VAR, Cell, Project, Req, Session, Specs
from further_dagster.errors import QueryError
from tests.engine.cells import record

pytestmark = pytest.mark.unit

DONE = "SELECT DISTINCT alpha FROM qdemo__fit WHERE status = 'success' ORDER BY alpha"


@pytest.fixture
def qdemo(further_registry):
    project = Project("qdemo")

    class Fit(Cell, project=project):
        class Specs(Specs):
            alpha: float = 1.0

        contributions = {"loss": float}

        def make(self):
            record("fit", self.key)
            return {"loss": (self.specs.alpha - 0.2) ** 2}

    class Summary(Cell, project=project):
        req_cells = {"fits": Req("fit", alpha=QUERY(DONE))}
        contributions = {"alphas": list}

        def make(self):
            record("summary", self.key)
            return {"alphas": [f.specs.alpha for f in self.inputs["fits"]]}

    class Maybe(Cell, project=project):
        req_cells = {
            "fits": Req(
                "fit", alpha=QUERY(DONE.replace("ORDER", "AND alpha > 9 ORDER"), allow_empty=True)
            )
        }
        contributions = {"n": int}

        def make(self):
            return {"n": len(self.inputs["fits"])}

    class Count(Cell, project=project):
        contributions = {"n": int}

        def make(self):
            return {"n": int(self.db.query("SELECT COUNT(*) AS n FROM qdemo__fit").n[0])}

    return project


def test_a_query_expands_over_stored_results(qdemo, further_tmp_root, calls):
    session = Session(qdemo, root=further_tmp_root, progress=False)
    session.call("qdemo.fit", alpha=VAR([0.1, 0.2, 0.3]))
    summary = session.call("qdemo.summary")
    assert summary.alphas == [0.1, 0.2, 0.3]
    assert calls.count("fit") == 3  # everything it swept over was stored
    prov = session.store.read_provenance("qdemo", "summary", summary.key)
    assert prov.extra["queries"] == {"fits": {"alpha": DONE}}
    # the resolved values, not the query, are identity: a new stored fit changes the key
    assert session.call("qdemo.summary").key == summary.key
    session.call("qdemo.fit", alpha=0.4)
    again = session.call("qdemo.summary")
    assert again.alphas == [0.1, 0.2, 0.3, 0.4] and again.key != summary.key
    assert calls.count("summary") == 2


def test_a_query_at_the_session_sweeps_too(qdemo, further_tmp_root, calls):
    session = Session(qdemo, root=further_tmp_root, progress=False)
    session.call("qdemo.fit", alpha=VAR([0.5, 0.7]))
    results = session.call("qdemo.fit", alpha=QUERY(DONE))
    assert [r.specs.alpha for r in results] == [0.5, 0.7]
    assert calls.count("fit") == 2


def test_no_rows_is_an_error_unless_allowed(qdemo, further_tmp_root):
    session = Session(qdemo, root=further_tmp_root, progress=False)
    session.call("qdemo.fit", alpha=0.5)
    with pytest.raises(QueryError, match="returned no rows"):
        session.call("qdemo.fit", alpha=QUERY(DONE.replace("ORDER", "AND alpha > 9 ORDER")))
    assert session.call("qdemo.maybe").n == 0


def test_a_failing_query_names_the_sql(qdemo, further_tmp_root):
    session = Session(qdemo, root=further_tmp_root, progress=False)
    session.call("qdemo.fit", alpha=0.5)
    with pytest.raises(Exception, match="SELECT nope FROM nowhere"):
        session.call("qdemo.fit", alpha=QUERY("SELECT nope FROM nowhere"))


def test_make_reads_the_index_through_self_db(qdemo, further_tmp_root):
    session = Session(qdemo, root=further_tmp_root, progress=False)
    session.call("qdemo.fit", alpha=VAR([0.5, 0.7]))
    assert session.call("qdemo.count").n == 2
