"""The Dagster Component: a defs.yaml builds what build_definitions builds; `dg` reads it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from further_dagster.dagster.component import load_project
from further_dagster.errors import UnknownCellError

pytestmark = pytest.mark.cli

ROOT = Path(__file__).resolve().parents[2]
PROJECT = ROOT / "example_component"
BIN = Path(sys.executable).parent


def _keys(defs: dg.Definitions) -> set[str]:
    return {spec.key.to_user_string() for spec in defs.resolve_all_asset_specs()}


def test_the_component_builds_the_same_definitions_as_build_definitions(monkeypatch):
    import example_project

    monkeypatch.syspath_prepend(str(PROJECT))  # what `dg` does: the project dir is importable
    loaded = dg.load_from_defs_folder(project_root=PROJECT)
    assert _keys(loaded) == _keys(example_project.defs)
    assert loaded.resolve_sensor_def("further_release_sensor") is not None


def test_dg_lists_and_checks_the_component_project(tmp_path):
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    env["DAGSTER_HOME"] = str(tmp_path)
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    listed = subprocess.run(
        [str(BIN / "dg"), "list", "defs", "--json"],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert listed.returncode == 0, listed.stderr
    assets = {a["asset_key"] for a in json.loads(listed.stdout)["assets"]}
    assert {"example/report", "example/fit", "example/measurements"} <= assets
    checked = subprocess.run(
        [str(BIN / "dg"), "check", "defs"],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert checked.returncode == 0, checked.stderr
    assert "All definitions loaded successfully" in checked.stdout + checked.stderr


def test_a_bad_project_reference_says_how_to_write_it():
    with pytest.raises(UnknownCellError, match="module:attribute"):
        load_project("nothing")
    with pytest.raises(UnknownCellError, match="not a further_dagster Project"):
        load_project("example_project:defs")
