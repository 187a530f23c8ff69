"""`further-dagster ls / show / explain / gc / index rebuild`: the record from the shell."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from further_dagster import Session
from further_dagster.cli import main
from further_dagster.store.index.writer import forget_writers
from further_dagster.store.lease import Lease
from tests.dagster import defs_module  # noqa: F401  (registers dag_demo)

pytestmark = pytest.mark.cli

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@pytest.fixture(autouse=True)
def _fresh_writers():
    yield
    forget_writers()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def stored(further_tmp_root: Path) -> dict[str, Any]:
    """dag_demo's definitions computed, plus one instance they no longer reach (n=9)."""
    session = Session(root=further_tmp_root, progress=False)
    summary = session.call("dag_demo.summary")
    stray = session.call("dag_demo.src", n=9)
    return {"session": session, "summary": summary.key, "stray": stray.key}


def test_ls_show_and_explain(
    capsys: pytest.CaptureFixture[str], further_tmp_root: Path, stored: dict[str, Any]
) -> None:
    code, out, _ = run(capsys, "ls", "--project", "dag_demo", "--cell", "power")
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == 3 and all(" dag_demo.power  success " in line for line in lines)
    assert [line.rsplit("  ", 1)[-1] for line in lines] == ["p=1", "p=2", "p=3"]
    code, out, _ = run(capsys, "show", stored["summary"][:10])
    assert code == 0 and f"dag_demo.summary@{stored['summary']}" in out
    assert "totals  json" in out and "powers[2] -> " in out
    code, out, _ = run(capsys, "explain", stored["summary"])
    assert code == 0 and out.startswith(f"dag_demo.summary@{stored['summary'][:12]}  success")
    assert out.count("src: dag_demo.src@") == 3  # under each of the three powers
    code, _, err = run(capsys, "explain", "0" * 8)
    assert code == 2 and "no instance with key '00000000'" in err


def test_index_rebuild_brings_back_a_lost_index(
    capsys: pytest.CaptureFixture[str], further_tmp_root: Path, stored: dict[str, Any]
) -> None:
    for name in os.listdir(further_tmp_root):
        if name.startswith(".index.sqlite"):
            os.unlink(further_tmp_root / name)
    forget_writers()
    from further_dagster.store.index import connection

    connection.dispose(f"sqlite:///{further_tmp_root / '.index.sqlite'}")
    code, out, _ = run(capsys, "index", "rebuild", "--root", str(further_tmp_root))
    assert code == 0 and "6 instance(s), 6 stored" in out
    code, out, _ = run(capsys, "ls")
    assert len(out.splitlines()) == 6


def test_gc_deletes_what_the_definitions_no_longer_reach_never_a_held_lease(
    capsys: pytest.CaptureFixture[str], further_tmp_root: Path, stored: dict[str, Any]
) -> None:
    session = stored["session"]
    stray = stored["stray"]
    argv = ["gc", "-m", "tests.dagster.defs_module"]
    code, out, _ = run(capsys, *argv, "--dry-run")
    assert code == 0
    assert out.splitlines()[0] == f"would delete dag_demo.src@{stray}"
    assert "would delete 1 instance(s)" in out
    holder = Lease(session.store.instance_dir("dag_demo", "src", stray))
    assert holder.try_acquire() == "acquired"
    try:
        code, out, _ = run(capsys, *argv)
        assert code == 0 and out.splitlines()[0] == f"held         dag_demo.src@{stray}"
        assert session.store.is_stored("dag_demo", "src", stray)
    finally:
        holder.release()
    code, out, _ = run(capsys, *argv)
    assert code == 0 and out.splitlines()[0] == f"deleted      dag_demo.src@{stray}"
    assert not session.store.instance_dir("dag_demo", "src", stray).exists()
    # what the definitions reach is all still stored and indexed
    assert session.store.is_stored("dag_demo", "summary", stored["summary"])
    code, out, _ = run(capsys, "ls")
    assert len(out.splitlines()) == 5 and stray not in out
    code, _, err = run(capsys, "gc")
    assert code == 2 and "-m MODULE" in err and "--older-than" in err


def test_gc_older_than_keeps_what_newer_instances_need(
    capsys: pytest.CaptureFixture[str], further_tmp_root: Path, stored: dict[str, Any]
) -> None:
    code, out, _ = run(capsys, "gc", "--older-than", "2000-01-01", "--dry-run")
    assert code == 0 and out.splitlines() == [
        f"would delete 0 instance(s) under {further_tmp_root}"
    ]
    code, _, err = run(capsys, "gc", "--older-than", "last tuesday")
    assert code == 2 and "not an ISO date" in err


def test_the_entry_point_runs_ls(further_tmp_root: Path, stored: dict[str, Any]) -> None:
    proc = subprocess.run(
        [str(BIN / "further-dagster"), "ls", "--cell", "summary"],
        cwd=ROOT,
        env={**os.environ, "FURTHER_ROOT": str(further_tmp_root)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"{stored['summary']}  dag_demo.summary  success")
