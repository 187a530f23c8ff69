"""Paths: names are validated before any path exists, and the root resolves in one order."""

from __future__ import annotations

from pathlib import Path

import pytest

from further_dagster.errors import InvalidNameError, StoreError
from further_dagster.store import ArtifactStore, layout, resolve_root

from .conftest import KEY

pytestmark = pytest.mark.unit

BAD_NAMES = ["", "1abc", "a-b", "a/b", "..", ".", "a b", "a\n", "caf\u00e9", "/abs", "a.b"]


@pytest.mark.parametrize("bad", [*BAD_NAMES, None, 3, b"abc"])
@pytest.mark.parametrize("position", ["project", "cell"])
def test_bad_project_or_cell_name_is_rejected_naming_the_value(
    store: ArtifactStore, bad: object, position: str
) -> None:
    args = {"project": "proj", "cell": "cell", "key": KEY}
    args[position] = bad  # type: ignore[assignment]
    with pytest.raises(InvalidNameError, match=position) as info:
        store.is_stored(**args)
    assert repr(bad) in str(info.value)
    with pytest.raises(InvalidNameError):
        store.instance_dir(**args)


def test_unhashable_name_is_an_invalid_name(store: ArtifactStore) -> None:
    with pytest.raises(InvalidNameError):
        store.is_stored(["p"], "c", KEY)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "bad", ["", KEY.upper(), KEY[:-1], KEY + "0", "../" + KEY[3:], KEY[:-1] + "g", None, 123]
)
def test_bad_key_is_rejected(store: ArtifactStore, bad: object) -> None:
    with pytest.raises(StoreError, match="logic key") as info:
        store.is_stored("p", "c", bad)  # type: ignore[arg-type]
    assert repr(bad) in str(info.value)


def test_good_names_build_the_documented_layout(tmp_path: Path) -> None:
    inst = layout.instance_dir(tmp_path, "Proj_1", "_cell", KEY)
    assert inst == tmp_path / "Proj_1" / "_cell" / KEY
    assert layout.result_dir(inst) == inst / "result"
    assert layout.lock_path(inst) == inst / "lock"
    assert layout.guard_path(inst) == inst / "lock.guard"
    assert layout.state_path(inst) == inst / "state.json"
    assert layout.log_path(inst) == inst / "cell.log"
    assert layout.result_tmp_dir(inst, "abc") == inst / "result.tmp-abc"
    assert layout.is_result_tmp_name("result.tmp-abc")
    assert not layout.is_result_tmp_name("result")
    assert layout.result_dir_str(str(tmp_path), "Proj_1", "_cell", KEY) == str(inst / "result")
    assert layout.relative_instance_dir("Proj_1", "_cell", KEY) == f"Proj_1/_cell/{KEY}"


@pytest.mark.parametrize("bad", [*BAD_NAMES, "manifest", "provenance"])
def test_bad_or_reserved_contribution_names(bad: str) -> None:
    with pytest.raises(InvalidNameError, match="contribution"):
        layout.contribution_file_name(bad, ".json")


@pytest.mark.parametrize("bad", ["../x", "a/b", "..", ".", ""])
def test_manifest_file_names_cannot_leave_the_result_dir(tmp_path: Path, bad: str) -> None:
    with pytest.raises(StoreError):
        layout.contribution_path(tmp_path, bad)
    assert layout.contribution_path(tmp_path, "x.npy") == tmp_path / "x.npy"


def test_resolve_root_prefers_explicit_then_env_then_project(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tmp_path / "proj"
    sub = project / "src" / "deep"
    sub.mkdir(parents=True)
    (project / "pyproject.toml").write_text("[project]\nname='x'\n")
    monkeypatch.chdir(sub)

    assert resolve_root(None) == project / ".further"
    monkeypatch.setenv("FURTHER_ROOT", "rel/env_root")
    assert resolve_root(None) == sub / "rel" / "env_root"
    assert resolve_root(tmp_path / "explicit") == tmp_path / "explicit"
    assert resolve_root("explicit") == sub / "explicit"
    assert resolve_root(None).is_absolute()


def test_resolve_root_falls_back_to_cwd_without_pyproject(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    found = resolve_root(None)
    # tmp dirs normally have no pyproject.toml above them; if one does, it is the project dir
    assert found.name == ".further" and tmp_path.is_relative_to(found.parent)
    assert resolve_root("~/x") == Path.home() / "x"


def test_store_root_is_resolved_and_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert ArtifactStore("r").root == tmp_path / "r"
    monkeypatch.setenv("FURTHER_ROOT", str(tmp_path / "env"))
    assert ArtifactStore().root == tmp_path / "env"
