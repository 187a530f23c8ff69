"""Process facts: gathered once, never by a subprocess; git read straight from .git files."""

from __future__ import annotations

import os
import platform
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from further_dagster.store import provenance
from further_dagster.store.provenance import git_info, package_versions, process_facts

pytestmark = pytest.mark.unit

SHA1 = "1" * 40
SHA2 = "2" * 40


@pytest.fixture
def fresh_facts() -> Iterator[None]:
    provenance.clear_cache()
    yield
    provenance.clear_cache()


def test_facts_are_gathered_once_without_subprocess(
    fresh_facts: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_subprocess(*args: object, **kwargs: object) -> None:
        raise AssertionError("provenance must not start a subprocess")

    monkeypatch.setattr(subprocess, "Popen", no_subprocess)
    monkeypatch.setattr(os, "system", no_subprocess)
    first = process_facts()
    assert process_facts() is first  # cached: the very same object
    assert first.pid == os.getpid()
    assert first.python_version == platform.python_version()
    assert first.executable
    assert first.argv
    assert "pydantic" in first.packages
    assert "numpy" in first.packages


def test_slurm_job_id_is_read_per_call(fresh_facts: None, monkeypatch: pytest.MonkeyPatch) -> None:
    assert process_facts().slurm_job_id is None
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    assert process_facts().slurm_job_id == "4242"
    monkeypatch.delenv("SLURM_JOB_ID")
    assert process_facts().slurm_job_id is None


def test_package_versions_skip_missing_packages() -> None:
    found = package_versions(("pydantic", "surely_not_installed_pkg_xyz"))
    assert list(found) == ["pydantic"]


def _repo(root: Path, head: str) -> Path:
    git = root / ".git"
    (git / "refs" / "heads").mkdir(parents=True)
    (git / "HEAD").write_text(head + "\n")
    return git


def test_git_branch_and_loose_ref(tmp_path: Path) -> None:
    git = _repo(tmp_path, "ref: refs/heads/feature/x")
    (git / "refs" / "heads" / "feature").mkdir()
    (git / "refs" / "heads" / "feature" / "x").write_text(SHA1 + "\n")
    sub = tmp_path / "a" / "b"
    sub.mkdir(parents=True)
    info = git_info(sub)
    assert info is not None
    assert (info.commit, info.branch) == (SHA1, "feature/x")


def test_git_packed_refs(tmp_path: Path) -> None:
    git = _repo(tmp_path, "ref: refs/heads/main")
    (git / "packed-refs").write_text(
        f"# pack-refs with: peeled fully-peeled sorted\n{SHA2} refs/heads/main\n^{SHA1}\n"
    )
    info = git_info(tmp_path)
    assert info is not None and (info.commit, info.branch) == (SHA2, "main")


def test_git_detached_head_and_unborn_branch(tmp_path: Path) -> None:
    _repo(tmp_path / "detached", SHA1)
    info = git_info(tmp_path / "detached")
    assert info is not None and (info.commit, info.branch) == (SHA1, None)
    _repo(tmp_path / "unborn", "ref: refs/heads/main")
    info = git_info(tmp_path / "unborn")
    assert info is not None and (info.commit, info.branch) == (None, "main")


def test_git_worktree_indirection(tmp_path: Path) -> None:
    main_git = _repo(tmp_path / "main", "ref: refs/heads/main")
    (main_git / "refs" / "heads" / "wt").write_text(SHA2)
    wt_git = main_git / "worktrees" / "wt"
    wt_git.mkdir(parents=True)
    (wt_git / "HEAD").write_text("ref: refs/heads/wt\n")
    (wt_git / "commondir").write_text("../..\n")
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    (checkout / ".git").write_text(f"gitdir: {wt_git}\n")
    info = git_info(checkout)
    assert info is not None and (info.commit, info.branch) == (SHA2, "wt")


def test_no_repository_gives_none(tmp_path: Path) -> None:
    # tmp dirs are not inside a repository on any sane machine; guard anyway
    if any((p / ".git").exists() for p in (tmp_path, *tmp_path.parents)):
        pytest.skip("tmp_path is inside a git repository")
    assert git_info(tmp_path) is None
