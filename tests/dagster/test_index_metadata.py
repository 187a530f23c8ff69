"""Materializations link to their row of the SQL index; a Dagster run is indexed like a Session."""

import dagster as dg
import pytest

from further_dagster import Session
from further_dagster.store.index import connection
from further_dagster.store.index.writer import forget_writers
from tests.dagster.index_defs import dag_idx, defs_for

pytestmark = pytest.mark.dagster

TOTAL = dg.AssetKey(["dag_idx", "total"])


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def index_url(request, further_tmp_root):
    """The store's index: SQLite beside the store, or a fresh PostgreSQL database whose URL
    carries a password (the throwaway server trusts every local connection, so it is ignored
    there, and must never show up in metadata)."""
    if request.param == "sqlite":
        url = f"sqlite:///{further_tmp_root / 'elsewhere.sqlite'}"
    else:
        server = request.getfixturevalue("postgres_server")
        name = server.fresh_database("dx")
        url = f"postgresql+psycopg2://{server.user}:s3cret@{server.host}:{server.port}/{name}"
    yield url
    forget_writers()
    connection.dispose(url)


def _materialize_total(defs, instance):
    result = dg.materialize(
        [a for a in defs.assets if TOTAL in a.keys], instance=instance, resources=defs.resources
    )
    assert result.success
    return result.get_asset_materialization_events()


def test_each_materialization_names_the_sql_of_its_index_row(further_tmp_root, index_url, calls):
    with dg.instance_for_test() as instance:
        events = _materialize_total(defs_for(index_url), instance)
    session = Session(root=further_tmp_root, progress=False, index_url=index_url)
    # total and, computed by its step, the two partitions of data: each its own row
    assert sorted(e.asset_key.path[-1] for e in events) == ["data", "data", "total"]
    for event in events:
        meta = event.step_materialization_data.materialization.metadata
        assert "s3cret" not in meta["further/index_url"].value
        assert meta["further/index_url"].value == index_url.replace(":s3cret@", ":***@")
        row = session.query(meta["further/index"].value)
        assert len(row) == 1
        assert row.iloc[0]["key"] == meta["further/logic_key"].value
        assert row.iloc[0]["cell"] == event.asset_key.path[-1]
        assert row.iloc[0]["status"] == "success"
    assert calls.count("data") == 2 and calls.count("total") == 1


def test_a_dagster_runs_instances_are_indexed_like_a_sessions(further_tmp_root, index_url):
    with dg.instance_for_test() as instance:
        events = _materialize_total(defs_for(index_url), instance)
    by_dagster = next(
        e.step_materialization_data.materialization.metadata["further/logic_key"].value
        for e in events
        if e.asset_key == TOTAL
    )
    session = Session(dag_idx, root=further_tmp_root, progress=False, index_url=index_url)
    by_session = session.call("dag_idx.total", weight=2).key  # data stored: only total runs
    rows = session.instances("dag_idx.total").set_index("key")
    assert rows.loc[by_dagster, "weight"] == 1 and rows.loc[by_dagster, "total"] == 4
    assert rows.loc[by_session, "weight"] == 2 and rows.loc[by_session, "total"] == 8

    def filled(key):
        row = session.query(f"SELECT * FROM instances WHERE key = '{key}'").iloc[0]
        return {c for c, v in row.items() if v is not None and v == v}  # v == v: not NaN

    assert filled(by_dagster) == filled(by_session)
    edges = "SELECT edge, position, child_key FROM edges WHERE parent_key = :key ORDER BY position"
    assert (
        session.query(edges, {"key": by_dagster}).values.tolist()
        == session.query(edges, {"key": by_session}).values.tolist()
    )  # the same two data partitions, in the same positions


def test_no_index_no_link(further_tmp_root):
    with dg.instance_for_test() as instance:
        events = _materialize_total(defs_for("none"), instance)
    for event in events:
        meta = event.step_materialization_data.materialization.metadata
        assert "further/logic_key" in meta
        assert "further/index" not in meta and "further/index_url" not in meta
