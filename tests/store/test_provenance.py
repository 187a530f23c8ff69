"""Process facts: gathered once (one `git status` at most); git read straight from .git files."""

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


def test_facts_are_gathered_once_without_subprocess_when_dirty_is_off(
    fresh_facts: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_subprocess(*args: object, **kwargs: object) -> None:
        raise AssertionError("provenance must not start a subprocess")

    monkeypatch.setenv("FURTHER_GIT_DIRTY", "0")
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


def _git(where: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-C", str(where), "-c", "user.name=t", "-c", "user.email=t@x", *args],
        check=True,
        capture_output=True,
    )


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    _git(tmp_path, "init", "-q", "-b", "main")
    (tmp_path / "cells.py").write_text("X = 1\n")
    _git(tmp_path, "add", "cells.py")
    _git(tmp_path, "commit", "-q", "-m", "first")
    return tmp_path


def test_dirty_flag_follows_tracked_files(checkout: Path) -> None:
    clean = git_info(checkout, dirty=True)
    assert clean is not None and clean.dirty is False and clean.branch == "main"
    assert clean.commit is not None and len(clean.commit) == 40
    (checkout / "untracked.txt").write_text("scratch")  # untracked files do not make it dirty
    assert git_info(checkout, dirty=True).dirty is False  # type: ignore[union-attr]
    (checkout / "cells.py").write_text("X = 2\n")
    assert git_info(checkout, dirty=True).dirty is True  # type: ignore[union-attr]
    assert git_info(checkout).dirty is None  # type: ignore[union-attr]  # not asked: unknown


def test_dirty_check_runs_once_per_process_and_takes_no_lock(
    checkout: Path, fresh_facts: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    (checkout / "cells.py").write_text("X = 3\n")
    monkeypatch.chdir(checkout)
    runs: list[dict[str, str]] = []
    real_run = subprocess.run

    def counting_run(*args: object, **kwargs: object) -> object:
        runs.append(dict(kwargs.get("env") or {}))  # type: ignore[call-overload]
        return real_run(*args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(subprocess, "run", counting_run)
    for _ in range(5):
        facts = process_facts()
    assert facts.git is not None and facts.git.dirty is True
    assert len(runs) == 1
    assert runs[0]["GIT_OPTIONAL_LOCKS"] == "0"  # a user's `git commit` never meets our lock
    assert not (checkout / ".git" / "index.lock").exists()


def test_dirty_is_unknown_outside_git_or_without_git(
    checkout: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    info = git_info(checkout, dirty=True)
    assert info is not None and info.commit is not None and info.dirty is None
