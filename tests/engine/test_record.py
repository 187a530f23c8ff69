"""The record from Python: Session.query / instances / results / explain, and Dagster runs
indexed like a Session's."""

from __future__ import annotations

import datetime as dt
import io
import json
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from further_dagster import VAR, Session
from further_dagster.errors import IndexQueryError, RecordIndexError
from further_dagster.store import layout
from further_dagster.store.index.rebuild import rebuild
from further_dagster.store.index.writer import forget_writers
from further_dagster.store.records import (
    GitInfo,
    Manifest,
    ManifestEntry,
    ProcessFacts,
    Provenance,
    State,
    write_record,
)
from tests.dagster import defs_module
from tests.engine.cells import engine_demo  # noqa: F401  (registers the project)

pytestmark = pytest.mark.unit

T0 = dt.datetime(2026, 11, 30, 12, 0, 0, tzinfo=dt.UTC)


@pytest.fixture(autouse=True)
def _fresh_writers():
    yield
    forget_writers()


def test_query_instances_and_results_of_a_sweep(further_session: Session, calls: Any) -> None:
    further_session.call("engine_demo.scaled", factor=VAR([1.0, 2.0, 3.0]))
    frame = further_session.query(
        "SELECT factor, total FROM engine_demo__scaled WHERE status = 'success' ORDER BY factor"
    )
    assert frame.values.tolist() == [[1.0, 3.0], [2.0, 6.0], [3.0, 9.0]]
    rows = further_session.instances("engine_demo.scaled", where={"factor": [1.0, 3.0]})
    assert sorted(rows["total"]) == [3.0, 9.0]
    before = calls.count()
    results = further_session.results("engine_demo.scaled", where={"factor": 2.0})
    assert [r.total for r in results] == [6.0] and results[0].specs.factor == 2.0
    assert calls.count() == before  # loaded from the store, nothing computed
    totals = further_session.query(
        "SELECT COUNT(*) AS n, SUM(value_real) AS s FROM contributions WHERE name = 'total'"
    )
    assert totals.values.tolist() == [[3, 18.0]]
    with pytest.raises(IndexQueryError, match="no such column: alpha"):
        further_session.query("SELECT alpha FROM engine_demo__scaled")


def test_a_session_without_an_index_says_how_to_get_one(further_tmp_root: Path) -> None:
    session = Session(root=further_tmp_root, progress=False, index_url="none")
    session.call("engine_demo.base")
    assert not (further_tmp_root / ".index.sqlite").exists()
    with pytest.raises(RecordIndexError, match="keeps no SQL index"):
        session.query("SELECT 1")


def _synthetic(
    root: Path,
    cell: str,
    key: str,
    specs: dict[str, Any],
    outs: dict[str, Any],
    *,
    deps: dict[str, Any] | None = None,
    minutes: int = 0,
    extra: dict[str, Any] | None = None,
) -> None:
    """An instance directory as a commit leaves it, with fixed times, host and commit."""
    inst = layout.instance_dir(root, "study", cell, key)
    result = layout.result_dir(inst)
    result.mkdir(parents=True)
    entries = {}
    for name, value in outs.items():
        data = json.dumps(value).encode()
        (result / f"{name}.json").write_bytes(data)
        entries[name] = ManifestEntry(file=f"{name}.json", codec="json", size=len(data))
    write_record(layout.manifest_path(result), Manifest(contributions=entries))
    started = T0 + dt.timedelta(minutes=minutes)
    finished = started + dt.timedelta(seconds=1.5)
    facts = ProcessFacts(
        python_version="3.11.7",
        platform="Linux",
        hostname="node-7",
        user="ana",
        pid=4242,
        argv=["python"],
        executable="python",
        packages={},
        git=GitInfo(commit="0123456789abcdef0123456789abcdef01234567", branch="main"),
        slurm_job_id="991" if cell == "fit" else None,
    )
    provenance = Provenance(
        project="study",
        cell=cell,
        key=key,
        path=f"study/{cell}/{key}",
        logic_version="2",
        api_version="1.4",
        specs=specs,
        deps=deps or {},
        releases={"study.data@aaaaaaaaaaaa": "v3"} if cell == "data" else {},
        extra=extra or {},
        process=facts,
        started_at=started,
        finished_at=finished,
        duration_s=1.5,
    )
    write_record(layout.provenance_path(result), provenance)
    state = State(
        status="success",
        attempts=1,
        created_at=started,
        updated_at=finished,
        started_at=started,
        finished_at=finished,
        host="node-7",
        pid=4242,
        duration_s=1.5,
    )
    write_record(layout.state_path(inst), state)


GOLDEN = """\
study.report@cccccccccccc  success
  key       cccccccccccccccccccccccccccccccc
  version   api 1.4, logic 2
  specs     -
  releases  -
  labels    -
  code      git 0123456789ab (main)
  computed  2026-11-30 12:02:01 UTC on node-7 (pid 4242), 1.500 s
  recorded  best=0.25
    fits[0]: study.fit@bbbbbbbbbbbb  success
      key       bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb
      version   api 1.4, logic 2
      specs     alpha=0.1
      releases  -
      labels    "paper"
      code      git 0123456789ab (main)
      computed  2026-11-30 12:01:01 UTC on node-7 (pid 4242), 1.500 s, slurm job 991
      recorded  score=0.25
        data: study.data@aaaaaaaaaaaa  success
          key       aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa
          version   api 1.4, logic 2
          specs     n=400, seed=0
          releases  study.data@aaaaaaaaaaaa="v3"
          labels    -
          code      git 0123456789ab (main)
          computed  2026-11-30 12:00:01 UTC on node-7 (pid 4242), 1.500 s
    fits[1]: ?@dddddddddddd  (not in the index)
"""


def test_explain_prints_the_instance_tree(further_tmp_root: Path) -> None:
    a, b, c, d = ("a" * 32, "b" * 32, "c" * 32, "d" * 32)
    _synthetic(further_tmp_root, "data", a, {"n": 400, "seed": 0}, {})
    _synthetic(
        further_tmp_root,
        "fit",
        b,
        {"alpha": 0.1},
        {"score": 0.25},
        deps={"data": a},
        minutes=1,
        extra={"labels": "paper"},
    )
    _synthetic(further_tmp_root, "report", c, {}, {"best": 0.25}, deps={"fits": [b, d]}, minutes=2)
    session = Session(root=further_tmp_root, progress=False)
    rebuild(str(session.store.index_url), str(further_tmp_root))
    out = io.StringIO()
    session.explain("ccccc", file=out)  # a unique key prefix will do
    assert out.getvalue() == GOLDEN
    with pytest.raises(RecordIndexError, match="no instance with key 'eeee'.*index rebuild"):
        session.explain("eeee")


@pytest.mark.dagster
def test_a_dagster_materialization_is_indexed(further_tmp_root: Path) -> None:
    defs = defs_module.defs
    by_key = {a.key: a for a in defs.assets}
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [by_key[dg.AssetKey(["dag_demo", "src"])]],
            instance=instance,
            resources=defs.resources,
        )
    assert result.success
    session = Session(root=further_tmp_root, progress=False)
    rows = session.instances("dag_demo.src")
    assert len(rows) == 1 and rows.iloc[0]["status"] == "success" and rows.iloc[0]["n"] == 4
    key = rows.iloc[0]["key"]
    meta = result.asset_materializations_for_node("dag_demo__src")[0].metadata
    assert meta["further/logic_key"].value == key  # the materialization names its index row


@pytest.mark.dagster
def test_build_definitions_passes_its_index_url_to_the_store(
    further_tmp_root: Path, tmp_path: Path
) -> None:
    from further_dagster import build_definitions

    url = f"sqlite:///{tmp_path / 'elsewhere.sqlite'}"
    defs = build_definitions(defs_module.dag_demo, index_url=url, asset_checks=False)
    src = next(a for a in defs.assets if a.key == dg.AssetKey(["dag_demo", "src"]))
    with dg.instance_for_test() as instance:
        assert dg.materialize([src], instance=instance, resources=defs.resources).success
    assert not (further_tmp_root / ".index.sqlite").exists()
    elsewhere = Session(root=further_tmp_root, progress=False, index_url=url)
    assert elsewhere.instances("dag_demo.src")["n"].tolist() == [4]


def test_recorded_contributions_beyond_the_automatic_rule(further_registry, further_tmp_root):
    from further_dagster import Cell, Project, Session
    from further_dagster.errors import CellDefinitionError

    project = Project("rec_forced")

    class Big(Cell, project=project):
        recorded = ("named",)
        contributions = {"named": dict, "plain": dict}

        def make(self):
            table = {f"k{i}": float(i) for i in range(600)}  # ~8 KiB of JSON each
            return {"named": table, "plain": table}

    session = Session(project, root=further_tmp_root, progress=False)
    result = session.call("rec_forced.big")
    rows = session.query(
        "SELECT name, recorded, value_json FROM contributions WHERE key = :key ORDER BY name",
        {"key": result.key},
    )
    by_name = {r["name"]: r for r in rows.to_dict("records")}
    assert bool(by_name["named"]["recorded"]) and by_name["named"]["value_json"]
    assert not bool(by_name["plain"]["recorded"])  # over the automatic 4 KiB: codec and size only

    with pytest.raises(CellDefinitionError, match="recorded"):

        class Wrong(Cell, project=project):
            recorded = ("nope",)
            contributions = {"x": int}

            def make(self):
                return {"x": 1}


def test_explain_says_whether_the_code_was_committed(
    further_session: Session, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A result computed from uncommitted edits says so in the record and in explain()."""
    import subprocess

    from further_dagster.store import provenance

    checkout = tmp_path / "checkout"
    checkout.mkdir()
    git = ["git", "-C", str(checkout), "-c", "user.name=t", "-c", "user.email=t@x"]
    subprocess.run([*git, "init", "-q", "-b", "main"], check=True)
    (checkout / "analysis.py").write_text("STEP = 1\n")
    subprocess.run([*git, "add", "analysis.py"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "first"], check=True)
    (checkout / "analysis.py").write_text("STEP = 2\n")  # edited, not committed
    monkeypatch.chdir(checkout)
    provenance.clear_cache()
    try:
        result = further_session.call("engine_demo.scaled", factor=7.0)
    finally:
        provenance.clear_cache()
    row = further_session.query(
        f"SELECT git_branch, git_dirty FROM instances WHERE key = '{result.key}'"
    )
    assert row.values.tolist() == [["main", 1]]
    out = io.StringIO()
    further_session.explain(result, file=out)
    assert "(main), dirty" in out.getvalue()


def test_project_versions_are_apart_in_the_record(further_registry: Any, further_tmp_root: Path):
    """Two versions of one project in one store: a reference reads only the version it names."""
    from tests.core.test_project_versions import lib_versions

    lib_versions("rlib")
    session = Session(root=further_tmp_root, progress=False)
    old = session.call("rlib@1.4.fit")
    new = session.call("rlib.fit")
    assert (old.impl, new.impl) == ("v1.4 w=3", "v2.0 w=5")
    current = session.instances("rlib.fit")
    assert current["key"].tolist() == [new.key]
    assert current["project_version"].tolist() == ["2"]  # canonical, as in the key
    assert session.instances("rlib@1.4.fit")["key"].tolist() == [old.key]
    assert [r.impl for r in session.results("rlib@1.4.fit")] == ["v1.4 w=3"]
    rows = session.query(
        "SELECT project, project_version, cell FROM cells WHERE cell = 'fit' "
        "ORDER BY project_version"
    )
    assert rows.values.tolist() == [["rlib", "1.4", "fit"], ["rlib", "2", "fit"]]


def test_an_increments_record_keeps_every_provenance_fact(
    further_registry: Any, further_tmp_root: Path
) -> None:
    """An increment of a cell in project version 2 that records a contribution: the index knows
    its project version, its increment and the contribution it was told to record."""
    from further_dagster import IncrementingCell, Increments, Project

    project = Project("rinc", version="2")

    class Walk(IncrementingCell, project=project):
        contributions = {"steps": list}
        recorded = ("steps",)

        def make_increment(self, previous: Any) -> dict[str, Any]:
            return {"steps": [*(previous.steps if previous is not None else []), self.increment]}

    session = Session(root=further_tmp_root, progress=False)
    result = session.call("rinc.walk", increments=Increments(exactly=2))
    assert result.increment == 2
    row = session.query(f"SELECT project_version, extra FROM instances WHERE key = '{result.key}'")
    (version, extra) = row.values.tolist()[0]
    assert version == "2"
    assert {k: json.loads(extra)[k] for k in ("increment", "project_version", "recorded")} == {
        "increment": 2,
        "project_version": "2",
        "recorded": ["steps"],
    }
    recorded = session.query(
        f"SELECT value_json FROM contributions WHERE key = '{result.key}' AND name = 'steps'"
    )
    assert recorded.values.tolist() == [["[1, 2]"]]
