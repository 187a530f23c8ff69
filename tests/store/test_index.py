"""The SQL index of the store, on SQLite and on the throwaway PostgreSQL (the same tests).

What a user relies on: every commit is indexed (instances, edges, contributions, the small
ones with their values), the index rebuilt from the files equals the incremental one, a failing
index never loses a result, an index of a newer schema is refused with the fix, parallel
processes writing one SQLite index do not fail, and gc deletes neither a reachable instance
nor one whose lease is held.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa

import further_dagster
from further_dagster.errors import (
    CellComputeError,
    ConfigurationError,
    IndexConnectionError,
    IndexQueryError,
    IndexSchemaError,
)
from further_dagster.store import ArtifactStore
from further_dagster.store.index import connection, schema
from further_dagster.store.index.collect import candidates, delete_instance
from further_dagster.store.index.query import query_frame, select_cell
from further_dagster.store.index.rebuild import rebuild
from further_dagster.store.index.writer import forget_writers
from further_dagster.store.lease import Lease

pytestmark = pytest.mark.unit

REPO = Path(further_dagster.__file__).resolve().parents[1]
A = "a" * 32
B = "b" * 32
C = "c" * 32
D = "d" * 32


def _fresh_pg_database(server: Any) -> str:
    name = server.fresh_database("ix")
    return f"postgresql+psycopg2://{server.user}@{server.host}:{server.port}/{name}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def index_url(request: pytest.FixtureRequest, store_root: Path) -> Iterator[str]:
    """The index URL of this test's store: the default SQLite file, or a fresh PostgreSQL
    database on the session's throwaway server."""
    if request.param == "sqlite":
        url = f"sqlite:///{store_root / '.index.sqlite'}"
    else:
        url = _fresh_pg_database(request.getfixturevalue("postgres_server"))
    yield url
    forget_writers()
    connection.dispose(url)


@pytest.fixture
def store(store_root: Path, index_url: str) -> ArtifactStore:
    return ArtifactStore(store_root, index_url=index_url, poll_s=0.02)


def _table(url: str, table: sa.Table) -> list[tuple[Any, ...]]:
    """Every row of `table`, sorted, with floats rounded (PostgreSQL and SQLite print them
    alike) and times as they are stored."""
    with connection.connect(url) as conn:
        rows = conn.execute(sa.select(table)).all()
    return sorted(tuple(r) for r in rows)


def _everything(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """The data tables; `fields` is left out: it is the catalog of columns the views were
    made from, which only grows (a quarantined instance's fields stay until a rebuild)."""
    return {t.name: _table(url, t) for t in schema.DATA_TABLES if t is not schema.fields}


def _commit_three(store: ArtifactStore) -> None:
    """a (scalars, a long string, an array), b depending on a, c a swept fan-in of a and b."""
    store.ensure(
        "p",
        "a",
        A,
        lambda tmp, log: {
            "score": 0.25,
            "n": 3,
            "ok": True,
            "name": "short",
            "long": "x" * 300,
            "hist": {"bins": [1, 2, 3]},
            "weights": np.arange(4.0),
        },
        {"specs": {"alpha": 0.1, "n": 3, "flag": True, "tag": "t"}, "api_version": "1.2"},
    )
    store.ensure("p", "b", B, lambda tmp, log: {"total": 7}, {"specs": {}, "deps": {"a": A}})
    store.ensure(
        "p", "c", C, lambda tmp, log: {"pair": [1, 2]}, {"deps": {"both": [A, B]}, "specs": {}}
    )


def test_a_commit_is_indexed_with_its_edges_and_recorded_contributions(
    store: ArtifactStore, index_url: str
) -> None:
    _commit_three(store)
    rows = query_frame(index_url, "SELECT key, project, cell, status, api_version FROM instances")
    assert sorted(rows["key"]) == [A, B, C]
    assert set(rows["status"]) == {"success"}
    a = query_frame(index_url, "SELECT * FROM instances WHERE key = :k", {"k": A}).iloc[0]
    assert a["api_version"] == "1.2" and a["host"] and a["path"] == f"p/a/{A}"
    edges = _table(index_url, schema.edges)
    assert [(e[0], e[1], e[2], e[3], bool(e[4])) for e in edges] == [
        (B, "a", 0, A, False),
        (C, "both", 0, A, True),
        (C, "both", 1, B, True),
    ]
    outs = query_frame(
        index_url,
        "SELECT name, codec, recorded, kind, value_json FROM contributions WHERE key = :k "
        "ORDER BY name",
        {"k": A},
    )
    recorded = {
        r.name: (bool(r.recorded), r.kind if r.recorded else None) for r in outs.itertuples()
    }
    assert recorded == {
        "score": (True, "real"),
        "n": (True, "int"),
        "ok": (True, "bool"),
        "name": (True, "text"),
        "hist": (True, "json"),
        "long": (False, None),  # a string over 256 characters: codec and size only
        "weights": (False, None),  # an array: never decoded by the index
    }
    # the per-cell view has the Specs and the recorded contributions as typed columns
    view = select_cell(index_url, "p", "a", {"alpha": 0.1, "flag": True})
    assert list(view["key"]) == [A]
    row = view.iloc[0]
    assert row["score"] == 0.25 and row["name"] == "short" and bool(row["ok"]) is True
    assert row["tag"] == "t" and row["n"] == 3 and row["out_n"] == 3  # `n` is both
    assert select_cell(index_url, "p", "a", {"alpha": [0.5, 0.1]})["key"].tolist() == [A]
    assert select_cell(index_url, "p", "a", {"alpha": 0.5}).empty
    cells = query_frame(index_url, "SELECT project, cell, instances FROM cells ORDER BY cell")
    assert cells.values.tolist() == [["p", "a", 1], ["p", "b", 1], ["p", "c", 1]]


def test_rebuild_from_the_files_equals_the_incremental_index(
    store: ArtifactStore, index_url: str
) -> None:
    _commit_three(store)
    calls = []

    def fails(tmp: Path, log: logging.Logger) -> dict[str, Any]:
        calls.append(1)
        raise ValueError("boom")

    with pytest.raises(CellComputeError):
        store.ensure("p", "d", D, fails, {"specs": {"alpha": 2.0}})
    store.quarantine("p", "b", B, "test: damaged")
    incremental = _everything(index_url)
    status = [c.name for c in schema.instances.columns].index("status")
    statuses = {r[0]: r[status] for r in incremental["instances"]}
    assert statuses == {A: "success", B: "missing", C: "success", D: "failed"}
    views_before = query_frame(index_url, "SELECT * FROM p__a")

    report = rebuild(index_url, str(store.root))
    assert (report.instances, report.committed) == (4, 2)
    assert _everything(index_url) == incremental
    assert query_frame(index_url, "SELECT * FROM p__a").equals(views_before)


def test_an_index_that_cannot_be_written_never_loses_the_result(
    store_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (store_root / ".index.sqlite").mkdir(parents=True)  # not a database (even root cannot)
    store = ArtifactStore(store_root)
    with caplog.at_level(logging.WARNING, logger="further.store.index"):
        out = store.ensure("p", "a", A, lambda tmp, log: {"x": 1}, {})
    assert not out.hit and store.is_stored("p", "a", A)
    assert store.load("p", "a", A) == {"x": 1}
    warning = caplog.text
    assert "is stored, but the SQL index" in warning and ".index.sqlite" in warning
    assert "further-dagster index rebuild" in warning
    # the store stays the truth: an index elsewhere is rebuilt from it, with the result
    other = f"sqlite:///{store_root.parent / 'other.sqlite'}"
    assert rebuild(other, str(store_root)).instances == 1
    assert query_frame(other, "SELECT key FROM instances")["key"].tolist() == [A]
    forget_writers()


@pytest.mark.postgres
def test_an_unreachable_postgres_index_names_the_url_without_password(
    store_root: Path, postgres_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"postgresql://further:s3cret@127.0.0.1:{postgres_server.port + 1}/nowhere"
    store = ArtifactStore(store_root, index_url=url)
    with caplog.at_level(logging.WARNING, logger="further.store.index"):
        store.ensure("p", "a", A, lambda tmp, log: {"x": 1}, {})
    assert store.load("p", "a", A) == {"x": 1}
    assert "s3cret" not in caplog.text and "further:***@127.0.0.1" in caplog.text
    with pytest.raises(IndexConnectionError) as raised:
        query_frame(str(store.index_url), "SELECT 1")
    message = str(raised.value)
    assert "s3cret" not in message and "further:***@" in message
    assert "check that the PostgreSQL server runs" in message
    forget_writers()


def test_an_index_url_that_is_not_sqlite_or_postgres_is_refused(store_root: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"mysql://u:\*\*\*@h/db"):
        ArtifactStore(store_root, index_url="mysql://u:pw@h/db")
    os.environ["FURTHER_INDEX_URL"] = "nonsense"
    try:
        with pytest.raises(ConfigurationError, match="FURTHER_INDEX_URL='nonsense'"):
            ArtifactStore(store_root)
    finally:
        del os.environ["FURTHER_INDEX_URL"]
    assert ArtifactStore(store_root, index_url="none").index_url is None
    plain = ArtifactStore(store_root, index_url="postgresql://u@h/db").index_url
    assert plain == "postgresql+psycopg2://u@h/db"


def test_an_index_of_a_newer_schema_is_refused_with_the_fix(
    store: ArtifactStore, index_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    _commit_three(store)
    with connection.connect(index_url, write=True) as conn:
        conn.execute(sa.update(schema.schema_table).values(version=schema.SCHEMA_VERSION + 1))
    forget_writers()
    connection.dispose(index_url)  # a new process, as it were
    with pytest.raises(IndexSchemaError, match="newer further_dagster") as raised:
        query_frame(index_url, "SELECT * FROM instances")
    assert "Upgrade further_dagster" in str(raised.value)
    assert "further-dagster index rebuild" in str(raised.value)
    with caplog.at_level(logging.WARNING, logger="further.store.index"):
        store.ensure("p", "d", D, lambda tmp, log: {"x": 1}, {})
    assert store.is_stored("p", "d", D) and "IndexSchemaError" in caplog.text
    assert rebuild(index_url, str(store.root)).instances == 4  # replaces it: usable again
    assert len(query_frame(index_url, "SELECT key FROM instances")) == 4


def test_a_failing_query_names_the_sql_error_and_the_query(
    store: ArtifactStore, index_url: str
) -> None:
    _commit_three(store)
    with pytest.raises(IndexQueryError) as raised:
        query_frame(index_url, "SELECT nope FROM instances")
    message = str(raised.value)
    assert "nope" in message and "query: SELECT nope FROM instances" in message
    assert "p__a" in message  # what there is to query
    with pytest.raises(IndexQueryError, match="has no column 'beta'.*alpha"):
        select_cell(index_url, "p", "a", {"beta": 1})


_WORKER = """
import sys
from further_dagster.store import ArtifactStore
root, url, first = sys.argv[1], sys.argv[2], int(sys.argv[3])
store = ArtifactStore(root, index_url=url)
for i in range(first, first + 25):
    store.ensure("p", "w", f"{i:032x}", lambda tmp, log: {"i": i}, {"specs": {"i": i}})
"""


def test_parallel_processes_write_one_index_without_failing(
    store_root: Path, index_url: str
) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, str(store_root), index_url, str(n * 25)],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(4)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        assert "could not be written" not in err, err
    keys = query_frame(index_url, "SELECT key FROM instances")["key"]
    assert sorted(keys) == [f"{i:032x}" for i in range(100)]
    assert sorted(select_cell(index_url, "p", "w")["i"]) == list(range(100))


def test_gc_never_deletes_a_reachable_instance_or_one_whose_lease_is_held(
    store: ArtifactStore, index_url: str
) -> None:
    _commit_three(store)  # c -> (a, b), b -> a
    store.ensure("p", "d", D, lambda tmp, log: {"x": 1}, {})
    # roots {b}: a is reachable through b's edge; c and d are not
    doomed = {c.key for c in candidates(index_url, roots=[B])}
    assert doomed == {C, D}
    holder = Lease(store.instance_dir("p", "d", D))
    assert holder.try_acquire() == "acquired"  # a live holder (this very process)
    try:
        assert delete_instance(str(store.root), "p", "d", D, store.lease_s) == "held"
        assert store.is_stored("p", "d", D)
    finally:
        holder.release()
    assert delete_instance(str(store.root), "p", "c", C, store.lease_s) == "deleted"
    assert not store.instance_dir("p", "c", C).exists()
    store.reindex("p", "c", C)
    assert sorted(query_frame(index_url, "SELECT key FROM instances")["key"]) == [A, B, D]
    assert not any(
        p.name.startswith(".gc-") for p in store.instance_dir("p", "c", C).parent.iterdir()
    )


def test_an_index_created_over_stored_results_says_to_rebuild(
    store_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ArtifactStore(store_root, index_url="none").ensure("p", "a", A, lambda t, g: {"x": 1}, {})
    store = ArtifactStore(store_root)  # the default index, created by this commit
    with caplog.at_level(logging.WARNING, logger="further.store.index"):
        store.ensure("p", "b", B, lambda tmp, log: {"x": 2}, {})
    assert "already holds results" in caplog.text and "index rebuild --root" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="further.store.index"):
        store.ensure("p", "c", C, lambda tmp, log: {"x": 3}, {})
    assert caplog.text == ""  # said once
    url = str(store.index_url)
    rebuild(url, str(store_root))
    assert sorted(query_frame(url, "SELECT key FROM instances")["key"]) == [A, B, C]
    forget_writers()
    connection.dispose(url)
