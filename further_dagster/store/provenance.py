"""Process-level provenance, gathered once per process.

A cell may run thousands of times per process; running `git` or scanning installed packages
per call would dominate cheap cells. So everything that cannot change while the process lives
(interpreter, host, user, argv, package versions, git commit at start) is read once and cached;
the pid is re-checked so a forked child reports its own; `SLURM_JOB_ID` is read per call because
it is one dictionary lookup.

Git facts come straight from the files git keeps (`.git/HEAD`, loose refs, `packed-refs`,
worktree `gitdir:` and `commondir` indirections). Whether the checkout is dirty needs a status
scan, so it is the one subprocess: `git status` once per process, read-only
(`GIT_OPTIONAL_LOCKS=0`: it never takes the index lock a user's `git commit` needs), bounded by
a timeout, and skipped with `FURTHER_GIT_DIRTY=0`; when it cannot say, `dirty` is None
("unknown"), never a guess. A file edited after the process started is not seen: the flag
describes the code the process imported.
"""

from __future__ import annotations

import getpass
import os
import platform
import shutil
import socket
import subprocess
import sys
import threading
from importlib import metadata
from pathlib import Path

from further_dagster import settings
from further_dagster.store.records import GitInfo, ProcessFacts

TRACKED_PACKAGES = ("further_dagster", "pydantic", "numpy", "pandas", "pyarrow")
"""Packages whose installed versions every provenance record carries (if installed)."""

_STATUS_TIMEOUT_S = 5.0  # a status scan slower than this is a checkout to switch the check off for

_lock = threading.Lock()
_cached: ProcessFacts | None = None


def package_versions(names: tuple[str, ...] = TRACKED_PACKAGES) -> dict[str, str]:
    """Installed versions from distribution metadata; absent packages are left out.

    Uses `importlib.metadata`, which reads `*.dist-info` files and never imports the package,
    so recording pandas' version does not cost a pandas import.
    """
    found: dict[str, str] = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def _find_git_dir(start: Path) -> Path | None:
    for candidate in (start, *start.parents):
        dot_git = candidate / ".git"
        if dot_git.is_dir():
            return dot_git
        if dot_git.is_file():  # worktree or submodule: "gitdir: <path>"
            text = dot_git.read_text(encoding="utf-8", errors="replace").strip()
            if text.startswith("gitdir:"):
                target = Path(text[len("gitdir:") :].strip())
                return target if target.is_absolute() else (candidate / target).resolve()
            return None
    return None


def _read_ref(git_dir: Path, common_dir: Path, ref: str) -> str | None:
    for base in (git_dir, common_dir):
        loose = base / ref
        if loose.is_file():
            value = loose.read_text(encoding="utf-8", errors="replace").strip()
            return value or None
    packed = common_dir / "packed-refs"
    if packed.is_file():
        for line in packed.read_text(encoding="utf-8", errors="replace").splitlines():
            if not line or line[0] in "#^":
                continue
            sha, _, name = line.partition(" ")
            if name.strip() == ref:
                return sha.strip()
    return None


def git_info(start: Path | None = None, *, dirty: bool = False) -> GitInfo | None:
    """Commit and branch of the repository containing `start` (default cwd), or None; with
    `dirty`, also whether tracked files differ from that commit (None when git cannot say).

    A repository without commits yields a branch and no commit; a detached HEAD yields a commit
    and no branch. Unreadable files yield None rather than an error: provenance is best effort
    and must never fail a computation.
    """
    where = Path(os.path.abspath(start or os.getcwd()))
    info = _git_head(where)
    if info is None or not dirty:
        return info
    return info.model_copy(update={"dirty": _git_dirty(where)})


def _git_dirty(where: Path) -> bool | None:
    git = shutil.which("git")
    if git is None:
        return None
    try:
        done = subprocess.run(
            [git, "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            timeout=_STATUS_TIMEOUT_S,
            env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"},
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:  # not a repository git accepts (e.g. owned by another user)
        return None
    return bool(done.stdout.strip())


def _git_head(where: Path) -> GitInfo | None:
    try:
        git_dir = _find_git_dir(where)
        if git_dir is None:
            return None
        common_dir = git_dir
        commondir_file = git_dir / "commondir"
        if commondir_file.is_file():
            rel = commondir_file.read_text(encoding="utf-8").strip()
            common_dir = (git_dir / rel).resolve()
        head = (git_dir / "HEAD").read_text(encoding="utf-8", errors="replace").strip()
        if head.startswith("ref:"):
            ref = head[len("ref:") :].strip()
            branch = ref[len("refs/heads/") :] if ref.startswith("refs/heads/") else ref
            return GitInfo(commit=_read_ref(git_dir, common_dir, ref), branch=branch)
        return GitInfo(commit=head or None, branch=None)
    except OSError:
        return None


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no USER/LOGNAME and no passwd entry (some containers)
        return str(os.getuid())


def _platform() -> str:
    """'Linux-6.1.0-x86_64'; not `platform.platform()`, which runs `uname -p` in a subprocess."""
    u = os.uname()
    return f"{u.sysname}-{u.release}-{u.machine}"


def _gather() -> ProcessFacts:
    return ProcessFacts(
        python_version=platform.python_version(),
        platform=_platform(),
        hostname=socket.gethostname(),
        user=_user(),
        pid=os.getpid(),
        argv=list(sys.argv),
        executable=sys.executable,
        packages=package_versions(),
        git=git_info(dirty=settings.git_dirty()),
        slurm_job_id=None,
    )


def process_facts() -> ProcessFacts:
    """This process's facts: cached after the first call, with the current pid and Slurm job id."""
    global _cached
    facts = _cached
    if facts is None:
        with _lock:
            if _cached is None:
                _cached = _gather()
            facts = _cached
    pid = os.getpid()
    slurm = os.environ.get("SLURM_JOB_ID") or None
    if facts.pid != pid:  # forked child: everything else is inherited truthfully
        facts = facts.model_copy(update={"pid": pid})
        _cached = facts
    if slurm != facts.slurm_job_id:
        facts = facts.model_copy(update={"slurm_job_id": slurm})
    return facts


def hostname() -> str:
    """The host name, cached with the rest of the process facts."""
    return process_facts().hostname


def clear_cache() -> None:
    """Forget the cached facts (tests; or after `os.chdir` into another repository)."""
    global _cached
    with _lock:
        _cached = None
