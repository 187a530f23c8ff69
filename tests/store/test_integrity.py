"""Fault suite: results damaged after the commit, planted pickles, symlinks, hostile roots.

Real files, real permissions (the suite runs as root, so "another user" is uid 65534 through
`os.chown`), and through the engine where the issue saw wrong data committed: every damage is a
`CorruptArtifactError` (or a refusal) naming the cell, key and file, never a wrong value.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import stat
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from further_dagster import Cell, Project, Req, Session, settings
from further_dagster.errors import (
    CellDefinitionError,
    CodecError,
    ConfigurationError,
    ContributionError,
    CorruptArtifactError,
    StoreError,
    UntrustedPickleError,
)
from further_dagster.store import ArtifactStore, Expected, Manifest
from further_dagster.store.codecs import Codec, register_codec
from further_dagster.store.records import read_record, write_record

from .conftest import KEY

pytestmark = pytest.mark.unit

NOBODY = 65534


def values(**extra: Any) -> dict[str, Any]:
    return {"array": np.arange(64, dtype=np.float64), "number": 123456.789, **extra}


def compute_of(vals: Mapping[str, Any]) -> Any:
    def compute(tmp_dir: Path, logger: logging.Logger) -> Mapping[str, Any]:
        return vals

    return compute


def result_of(store: ArtifactStore, project: str = "p", cell: str = "c", key: str = KEY) -> Path:
    return store.instance_dir(project, cell, key) / "result"


def edit_manifest(result: Path, **changes: dict[str, Any] | None) -> None:
    """Replace (dict) or drop (None) manifest entries, as a hand edit would."""
    path = result / "manifest.json"
    data = read_record(path, Manifest).model_dump()
    for name, entry in changes.items():
        if entry is None:
            data["contributions"].pop(name)
        else:
            data["contributions"][name] = entry
    write_record(path, Manifest.model_validate(data))


class Marker:
    """A pickle that creates a file when it is loaded: proof that planted code ran."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (open, (str(self.path), "w"))


# --- damaged bytes ----------------------------------------------------------------------------


def test_a_bit_flip_in_npy_data_is_refused(store: ArtifactStore) -> None:
    store.ensure("p", "c", KEY, compute_of(values()), {})
    path = result_of(store) / "array.npy"
    data = bytearray(path.read_bytes())
    data[200] ^= 0x10  # inside the data section: the header still parses, a value changes
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptArtifactError, match=rf"p\.c@{KEY}.*array\.npy.*blake2b"):
        store.load("p", "c", KEY)
    assert store.is_intact("p", "c", KEY)  # same size: only the digest sees it
    size_only = ArtifactStore(store.root, verify="size")
    assert size_only.load("p", "c", KEY)["array"][9] != 9.0  # the documented trade-off


def test_a_json_number_cut_in_half_is_refused(store: ArtifactStore) -> None:
    store.ensure("p", "c", KEY, compute_of(values()), {})
    path = result_of(store) / "number.json"
    assert path.read_text() == "123456.789"
    path.write_text("123456")  # still valid JSON, a different number
    for verify in ("digest", "size"):
        with pytest.raises(CorruptArtifactError, match=r"number\.json has 6 bytes.*recorded 10"):
            ArtifactStore(store.root, verify=verify).load("p", "c", KEY)  # type: ignore[arg-type]
    assert not store.is_intact("p", "c", KEY)


@pytest.mark.parametrize(
    ("name", "value", "file"),
    [
        ("frame", pd.DataFrame({"a": [1.5, 2.5, 3.5]}), "frame.parquet"),
        ("things", {1, 2, 3}, "things.pkl"),
        ("array", np.arange(3), "array.npy"),
    ],
)
def test_truncated_files_are_refused(
    store: ArtifactStore, name: str, value: Any, file: str
) -> None:
    store.ensure("p", "c", KEY, compute_of({name: value}), {})
    path = result_of(store) / file
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CorruptArtifactError, match=rf"{file} has \d+ bytes"):
        store.load("p", "c", KEY)


# --- manifest edits -----------------------------------------------------------------------------


def test_an_entry_pointed_at_another_file_or_codec_is_refused(store: ArtifactStore) -> None:
    frame = pd.DataFrame({"a": [1.0]})
    store.ensure("p", "c", KEY, compute_of({"number": 1.5, "frame": frame}), {})
    entries = store.read_manifest("p", "c", KEY).contributions
    edit_manifest(result_of(store), number=entries["frame"].model_dump())
    with pytest.raises(CorruptArtifactError, match="'number' names file 'frame.parquet'"):
        store.load("p", "c", KEY)
    # the file renamed too, so that name and suffix agree: the declared type still refuses it
    result = result_of(store)
    (result / "frame.parquet").rename(result / "number.parquet")
    edit_manifest(result, number={**entries["frame"].model_dump(), "file": "number.parquet"})
    expect = Expected(contributions={"number": float, "frame": pd.DataFrame})
    with pytest.raises(CorruptArtifactError, match="cannot hold its declared type float"):
        store.load("p", "c", KEY, names=["number"], expect=expect)


@pytest.mark.parametrize("name", ["../escape", "manifest", "a/b"])
def test_entries_whose_names_could_leave_the_result_are_refused(
    store: ArtifactStore, name: str
) -> None:
    store.ensure("p", "c", KEY, compute_of({"v": 1}), {})
    edit_manifest(result_of(store), **{name: {"file": f"{name}.json", "codec": "json"}})
    with pytest.raises(CorruptArtifactError, match="not a valid contribution"):
        store.load("p", "c", KEY)
    assert not store.is_intact("p", "c", KEY)


def test_a_dropped_entry_is_refused_against_the_declaration(store: ArtifactStore) -> None:
    store.ensure("p", "c", KEY, compute_of(values()), {})
    edit_manifest(result_of(store), number=None)
    expect = Expected(contributions={"array": np.ndarray, "number": float})
    with pytest.raises(
        CorruptArtifactError, match=r"lacks declared contribution\(s\) \['number'\]"
    ):
        store.load("p", "c", KEY, expect=expect)


def test_a_legacy_manifest_loads_with_the_checks_it_allows(store: ArtifactStore) -> None:
    store.ensure("p", "c", KEY, compute_of(values()), {})
    entries = store.read_manifest("p", "c", KEY).contributions
    legacy = {n: {"file": e.file, "codec": e.codec} for n, e in entries.items()}
    (result_of(store) / "manifest.json").write_text(json.dumps({"contributions": legacy}))
    assert store.read_manifest("p", "c", KEY).contributions["array"].blake2b is None
    assert store.is_intact("p", "c", KEY)
    np.testing.assert_array_equal(store.load("p", "c", KEY)["array"], values()["array"])
    audit = store.audit("p", "c", KEY)
    assert audit.problem is None and audit.unverified == ["array", "number"]
    edit_manifest(result_of(store), number={"file": "number.json", "codec": "pickle"})
    with pytest.raises(CorruptArtifactError, match="relabelled"):
        store.load("p", "c", KEY)


def test_a_pickle_whose_class_is_gone_is_not_damage(
    store: ArtifactStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib
    import sys

    (tmp_path / "vanishing_mod.py").write_text("class Thing:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("vanishing_mod")
    store.ensure("p", "c", KEY, compute_of({"obj": module.Thing()}), {})
    (tmp_path / "vanishing_mod.py").unlink()
    monkeypatch.delitem(sys.modules, "vanishing_mod")
    with pytest.raises(CodecError, match="vanishing_mod.*importable") as info:
        store.load("p", "c", KEY)
    assert not isinstance(info.value, CorruptArtifactError)
    assert store.is_stored("p", "c", KEY) and store.audit("p", "c", KEY).problem is None


# --- planted pickles ------------------------------------------------------------------------


def test_a_pickle_relabelled_as_json_never_runs(store: ArtifactStore, tmp_path: Path) -> None:
    import pickle

    marker = tmp_path / "ran"
    store.ensure("p", "c", KEY, compute_of({"doc": {"a": 1}}), {})
    path = result_of(store) / "doc.json"
    path.write_bytes(pickle.dumps(Marker(marker)))
    with pytest.raises(CorruptArtifactError, match="doc.json"):  # the digest
        store.load("p", "c", KEY)
    size, digest = path.stat().st_size, _digest(path)
    for codec in ("pickle", "json"):  # a planter who also rewrites the manifest
        edit_manifest(
            result_of(store),
            doc={"file": "doc.json", "codec": codec, "size": size, "blake2b": digest},
        )
        with pytest.raises(CorruptArtifactError, match="doc.json"):
            store.load("p", "c", KEY)
    assert not marker.exists()


def _digest(path: Path) -> str:
    from further_dagster.store.codecs import bytes_digest

    return bytes_digest(path.read_bytes())


@pytest.fixture
def planted(store: ArtifactStore, tmp_path: Path) -> Iterator[tuple[ArtifactStore, Path]]:
    """A committed result whose pickle, manifest and digest are consistent (a careful planter)
    and whose loading would create `marker`."""
    marker = tmp_path / "ran"
    store.ensure("p", "c", KEY, compute_of({"obj": Marker(marker), "doc": [1]}), {})
    assert not marker.exists()  # encoding does not run it
    yield store, marker


@pytest.mark.parametrize(
    "spoil",
    ["other owner", "world-writable result", "group-writable instance", "other owner file"],
)
def test_pickles_another_user_could_have_written_are_refused(
    planted: tuple[ArtifactStore, Path], spoil: str
) -> None:
    store, marker = planted
    inst = store.instance_dir("p", "c", KEY)
    result = inst / "result"
    if spoil == "other owner":
        os.chown(inst, NOBODY, NOBODY)
    elif spoil == "world-writable result":
        os.chmod(result, 0o777)
    elif spoil == "group-writable instance":
        os.chown(inst, os.getuid(), NOBODY)
        os.chmod(inst, 0o775)
    else:
        os.chown(result / "obj.pkl", NOBODY, NOBODY)
    with pytest.raises(UntrustedPickleError, match=rf"p\.c@{KEY}.*FURTHER_SHARED_STORE=1"):
        store.load("p", "c", KEY)
    assert not marker.exists()
    assert store.load("p", "c", KEY, names=["doc"]) == {"doc": [1]}  # JSON runs nothing
    ArtifactStore(store.root, shared=True).load("p", "c", KEY)  # shared on purpose: loads
    assert marker.exists()


def test_the_shared_switch_comes_from_the_environment(
    planted: tuple[ArtifactStore, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    store, marker = planted
    os.chown(store.instance_dir("p", "c", KEY), NOBODY, NOBODY)
    monkeypatch.setenv("FURTHER_SHARED_STORE", "1")
    ArtifactStore(store.root).load("p", "c", KEY)
    assert marker.exists()
    monkeypatch.setenv("FURTHER_SHARED_STORE", "maybe")
    with pytest.raises(ConfigurationError, match="FURTHER_SHARED_STORE='maybe'"):
        ArtifactStore(store.root)


def test_verify_setting_is_validated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FURTHER_VERIFY", "Size")
    assert ArtifactStore(tmp_path).verify == "size"
    monkeypatch.setenv("FURTHER_VERIFY", "none")
    with pytest.raises(ConfigurationError, match="FURTHER_VERIFY='none'.*'digest'.*'size'"):
        ArtifactStore(tmp_path)
    with pytest.raises(ConfigurationError, match="verify='crc'"):
        ArtifactStore(tmp_path, verify="crc")  # type: ignore[arg-type]


# --- symlinks -------------------------------------------------------------------------------


def _tree(path: Path) -> dict[str, bytes | None]:
    return {
        str(p.relative_to(path)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(path.rglob("*"))
    }


def test_a_symlinked_instance_dir_is_refused_and_its_target_untouched(
    store: ArtifactStore, tmp_path: Path
) -> None:
    target = tmp_path / "elsewhere"
    (target / "result.tmp-0123").mkdir(parents=True)
    (target / "result.tmp-0123" / "partial").write_bytes(b"keep me")
    (target / "notes.txt").write_text("mine")
    before = _tree(target)
    inst = store.instance_dir("p", "c", KEY)
    inst.parent.mkdir(parents=True)
    inst.symlink_to(target)
    calls: list[int] = []

    def compute(tmp_dir: Path, logger: logging.Logger) -> Mapping[str, Any]:
        calls.append(1)
        return {"v": 1}

    with pytest.raises(StoreError, match=rf"{inst} is a symlink"):
        store.ensure("p", "c", KEY, compute, {})
    assert calls == [] and _tree(target) == before
    with pytest.raises(StoreError, match="symlink"):
        store.load("p", "c", KEY)
    assert not store.is_intact("p", "c", KEY) and list(store.list()) == []
    with pytest.raises(StoreError, match="symlink"):
        store.quarantine("p", "c", KEY, "test")
    assert _tree(target) == before


def test_a_symlinked_project_dir_is_refused_before_anything_is_written(
    store: ArtifactStore, tmp_path: Path
) -> None:
    target = tmp_path / "other_project"
    target.mkdir()
    store.root.mkdir(parents=True)
    (store.root / "p").symlink_to(target)
    with pytest.raises(StoreError, match="symlink"):
        store.ensure("p", "c", KEY, compute_of({"v": 1}), {})
    assert list(target.iterdir()) == []


@pytest.mark.parametrize("what", ["result", "manifest.json", "number.json", "state.json"])
def test_symlinks_inside_an_instance_are_refused(
    store: ArtifactStore, tmp_path: Path, what: str
) -> None:
    store.ensure("p", "c", KEY, compute_of(values()), {})
    inst = store.instance_dir("p", "c", KEY)
    path = inst / what if what in ("result", "state.json") else inst / "result" / what
    moved = tmp_path / "real"
    path.rename(moved)
    path.symlink_to(moved)
    with pytest.raises(StoreError, match=rf"{path} is a symlink"):
        store.read_state("p", "c", KEY) if what == "state.json" else store.load("p", "c", KEY)


def test_a_symlinked_cell_log_is_refused_and_its_target_untouched(
    store: ArtifactStore, tmp_path: Path
) -> None:
    target = tmp_path / "victim.txt"
    target.write_text("precious")
    inst = store.instance_dir("p", "c", KEY)
    inst.mkdir(parents=True)
    (inst / "cell.log").symlink_to(target)
    with pytest.raises(StoreError, match="cell.log is a symlink"):
        store.ensure("p", "c", KEY, compute_of({"v": 1}), {})
    assert target.read_text() == "precious" and not store.is_stored("p", "c", KEY)


# --- encoding ---------------------------------------------------------------------------------


@pytest.mark.parametrize("make", ["list", "dict", "nested"])
def test_cyclic_values_are_a_contribution_error_not_a_hang(store: ArtifactStore, make: str) -> None:
    value: Any
    if make == "list":
        value = [1, 2]
        value.append(value)
    elif make == "dict":
        value = {"a": 1}
        value["self"] = value
    else:
        inner: list[Any] = []
        value = {"x": [inner, {"y": inner}]}  # shared, not cyclic: fine
        store.ensure("p", "c", KEY, compute_of({"v": value}), {})
        inner.append(value)  # now it is
    with pytest.raises(ContributionError, match=r"p\.d@.*'v'.*contains itself"):
        store.ensure("p", "d", KEY, compute_of({"v": value}), {})
    assert not store.is_stored("p", "d", KEY)


class FailingCodec(Codec):
    name = "failing"
    suffix = ".fail"
    errno = errno.ENOSPC

    def can_encode(self, value: Any) -> bool:
        return isinstance(value, bytes)

    def encode(self, value: Any, path: Path) -> None:
        path.write_bytes(value[:1])
        raise OSError(self.errno, os.strerror(self.errno))

    def decode(self, path: Path) -> Any:
        return path.read_bytes()


@pytest.mark.parametrize(("code", "fix"), [(errno.ENOSPC, "free space"), (errno.EROFS, "writable")])
def test_an_os_error_while_encoding_is_a_store_error_with_the_fix(
    store: ArtifactStore, code: int, fix: str
) -> None:
    codec = FailingCodec()
    codec.errno = code
    register_codec(codec)
    with pytest.raises(StoreError, match=rf"p\.c@{KEY[:8]}.*{fix}") as info:
        store.ensure("p", "c", KEY, compute_of({"blob": b"data"}), {})
    assert "picklable" not in str(info.value)
    assert not store.is_stored("p", "c", KEY)


# --- the cwd fallback -------------------------------------------------------------------------


@pytest.fixture
def no_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory with no pyproject.toml above it."""
    here = tmp_path / "cwd"
    here.mkdir()
    assert settings._project_dir(here) is None
    monkeypatch.chdir(here)
    settings._warned_cwd_fallback.clear()
    return here


def test_the_cwd_fallback_warns_once(no_project: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="further.settings"):
        assert settings.store_root() == no_project / ".further"
        assert settings.store_root() == no_project / ".further"
    warnings = [r for r in caplog.records if "no pyproject.toml" in r.getMessage()]
    assert len(warnings) == 1


def test_a_world_writable_cwd_of_another_user_is_refused(no_project: Path) -> None:
    os.chmod(no_project, 0o777 | stat.S_ISVTX)
    assert settings.store_root() == no_project / ".further"  # ours: allowed
    os.chown(no_project, NOBODY, NOBODY)
    with pytest.raises(ConfigurationError, match="world-writable.*FURTHER_ROOT"):
        settings.store_root()
    with pytest.raises(ConfigurationError):
        ArtifactStore()
    assert settings.store_root(no_project / "mine") == no_project / "mine"  # explicit: fine


# --- through the engine -----------------------------------------------------------------------


@pytest.fixture
def chain(further_registry: Any, further_tmp_root: Path) -> dict[str, Any]:
    """up -> down in project `integ`, counting make() calls."""
    project = Project("integ")
    calls = {"up": 0, "down": 0}

    class Up(Cell, project=project):
        contributions = {"x": np.ndarray, "label": str}

        def make(self) -> dict[str, Any]:
            calls["up"] += 1
            return {"x": np.arange(32, dtype=np.float64), "label": "up"}

    class Down(Cell, project=project):
        req_cells = {"up": Req("up")}
        contributions = {"total": float}

        def make(self) -> dict[str, Any]:
            calls["down"] += 1
            return {"total": float(self.inputs["up"].x.sum())}

    session = Session(root=further_tmp_root, progress=False)
    return {"session": session, "calls": calls, "Up": Up, "Down": Down}


def test_a_dependent_of_a_damaged_upstream_fails_and_the_next_call_recomputes(
    chain: dict[str, Any],
) -> None:
    session, calls = chain["session"], chain["calls"]
    up = session.call("integ.up")
    inst = session.store.instance_dir("integ", "up", up.key)
    data = bytearray((inst / "result" / "x.npy").read_bytes())
    data[-8] ^= 0x40  # the last float, +2**... : a silently wrong total without the digest
    (inst / "result" / "x.npy").write_bytes(bytes(data))
    with pytest.raises(CorruptArtifactError, match=rf"integ\.up@{up.key}.*x\.npy"):
        session.call("integ.down")
    assert calls == {"up": 1, "down": 0}
    down = session.plan("integ.down").roots[0]
    assert not session.store.is_stored("integ", "down", down.key)  # nothing wrong committed
    assert not session.store.is_stored("integ", "up", up.key)  # moved aside ...
    (damaged,) = inst.glob("damaged-*")  # ... and kept, with why
    assert (damaged / "result" / "x.npy").read_bytes() == bytes(data)
    assert "x.npy" in json.loads((damaged / "reason.json").read_text())["reason"]
    assert session.call("integ.down").total == float(sum(range(32)))
    assert calls == {"up": 2, "down": 1}


def test_a_damaged_result_the_caller_asked_for_is_moved_aside_and_recomputed(
    chain: dict[str, Any],
) -> None:
    session, calls = chain["session"], chain["calls"]
    up = session.call("integ.up")
    result = session.store.instance_dir("integ", "up", up.key) / "result"
    edit_manifest(result, label=None)  # a dropped entry: the cell declares `label`
    with pytest.raises(CorruptArtifactError, match=r"lacks declared contribution\(s\) \['label'\]"):
        session.call("integ.up")
    assert session.call("integ.up").label == "up" and calls["up"] == 2


def test_loaded_values_are_checked_against_the_declared_types(chain: dict[str, Any]) -> None:
    session, up_cell = chain["session"], chain["Up"]
    up = session.call("integ.up")
    up_cell.contributions = {"x": np.ndarray, "label": int}  # declared int, stored a str
    with pytest.raises(CorruptArtifactError, match="'label' loaded as str, declared as int"):
        session.load(session.plan("integ.up").roots[0])
    assert not session.store.is_stored("integ", "up", up.key)


def test_plan_with_verify_moves_aside_what_is_not_intact(chain: dict[str, Any]) -> None:
    from further_dagster.engine.plan import missing

    session = chain["session"]
    down = session.call("integ.down")
    (target,) = session.plan("integ.down").roots
    up_inst = next(target.dep_instances())
    (session.store.instance_dir("integ", "down", down.key) / "result" / "total.json").unlink()
    assert missing(session.store, [target]) == []  # a stat says "stored"
    assert [i.key for i in missing(session.store, [target], verify=True)] == [target.key]
    assert not session.store.is_stored("integ", "down", target.key)  # moved aside
    assert session.store.is_stored("integ", "up", up_inst.key)


def test_a_cell_codec_forbids_pickle(further_registry: Any, further_tmp_root: Path) -> None:
    project = Project("coded")

    class Plain(Cell, project=project):
        codec = "json"
        contributions = {"v": object}

        def make(self) -> dict[str, Any]:
            return {"v": {1, 2}}  # a set: pickled without the codec

    session = Session(root=further_tmp_root, progress=False)
    with pytest.raises(ContributionError, match="codec 'json'.*cannot write"):
        session.call("coded.plain")
    with pytest.raises(CellDefinitionError, match="codec = 'pickle' is not allowed"):

        class Bad(Cell, project=project):
            codec = "pickle"
            contributions = {"v": int}

            def make(self) -> dict[str, Any]:
                return {"v": 1}


def test_a_cell_codec_refuses_a_stored_pickle(
    further_registry: Any, further_tmp_root: Path
) -> None:
    project = Project("coded")

    class Loose(Cell, project=project):
        contributions = {"v": object}

        def make(self) -> dict[str, Any]:
            return {"v": {1, 2}}

    session = Session(root=further_tmp_root, progress=False)
    session.call("coded.loose")
    Loose.codec = "json"  # declared afterwards: the stored pickle is no longer acceptable
    with pytest.raises(CorruptArtifactError, match="declares codec = 'json'"):
        session.call("coded.loose")


@pytest.fixture
def two_projects(further_registry: Any, further_tmp_root: Path) -> dict[str, Any]:
    lib = Project("lib")
    app = Project("app", calls=["lib"])

    class Thing(Cell, project=lib):
        contributions = {"obj": set}

        def make(self) -> dict[str, Any]:
            return {"obj": {1, 2, 3}}

    class Use(Cell, project=app):
        req_cells = {"thing": Req("lib.thing")}
        contributions = {"n": int}

        def make(self) -> dict[str, Any]:
            return {"n": len(self.inputs["thing"].obj)}

    return {"lib": lib, "app": app, "root": further_tmp_root}


def test_a_pickle_of_an_external_project_needs_session_trust(two_projects: dict[str, Any]) -> None:
    root = two_projects["root"]
    Session(root=root, progress=False).call("lib.thing")  # asked for directly: not external
    with pytest.raises(UntrustedPickleError, match=r"'lib'.*'app'.*Session\(trust=\['lib'\]\)"):
        Session(root=root, progress=False).call("app.use")
    assert Session(root=root, progress=False, trust=["lib"]).call("app.use").n == 3


def test_projects_passed_to_the_session_are_trusted(two_projects: dict[str, Any]) -> None:
    root = two_projects["root"]
    session = Session(two_projects["app"], two_projects["lib"], root=root, progress=False)
    assert session.call("app.use").n == 3
