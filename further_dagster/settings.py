"""Every `FURTHER_*` setting, read and validated in this one module.

    variable                   default                       allowed
    -------------------------  ----------------------------  ----------------------------------
    FURTHER_ROOT               .further beside the nearest   a directory, or a path that does
                               pyproject.toml above the      not exist yet (created on first
                               working directory (the        write); ~ is expanded, a relative
                               working directory if none)    path is taken from the working dir
    FURTHER_LEASE_SECS         15                            finite seconds >= 0.5 (MIN_LEASE_S:
                                                             the heartbeat runs every lease/3,
                                                             0.2 s at best)
    FURTHER_WAIT_TIMEOUT_SECS  3600                          finite seconds >= 0
    FURTHER_MAX_ATTEMPTS       3                             an integer >= 1
    FURTHER_DASK_ADDRESS       unset: a local cluster        a scheduler address, e.g.
                                                             tcp://10.0.0.5:8786
    FURTHER_STATIC_DAG_NODE_THRESH  50                       an integer >= 1: in mode
                                                             DASK_STATIC_DAG, a static chapter of
                                                             at least this many instances goes
                                                             to Dask as one graph
    FURTHER_PG_BIN             /usr/lib/postgresql/15/bin    a directory with initdb, pg_ctl,
                                                             createdb and postgres
    FURTHER_VERIFY             digest                        digest (sizes and blake2b digests
                                                             checked on every load) or size
                                                             (sizes only: for huge files)
    FURTHER_SHARED_STORE       0                             1/true/yes or 0/false/no; 1 loads
                                                             pickles that other users could
                                                             have written (a shared root)
    FURTHER_FSYNC              0                             1/true/yes/on or 0/false/no/off; 1
                                                             fsyncs every file of a result and
                                                             its directory before the commit
                                                             rename (survives a power loss)
    FURTHER_INDEX_URL          sqlite:///<root>/.index.sqlite  a sqlite:/// or postgresql:// URL
                                                             (SQLAlchemy form; postgresql://
                                                             means postgresql+psycopg2://), or
                                                             none/off: no SQL index
    FURTHER_MAX_UNROLL         100000                        an integer >= 1: ITER steps one
                                                             resolution may unroll on a path
    FURTHER_GIT_DIRTY          1                             1/true/yes/on or 0/false/no/off; 0
                                                             skips the once-per-process
                                                             `git status` (huge checkouts)

Who reads them: the root, the lease, the wait timeout and the attempts are the artifact store's
(`ArtifactStore`, `ReleaseHistory`, and through them `Session` and the Dagster resources); the
Dask address is the engine's Dask backend's; the PostgreSQL bin directory is the throwaway test
server's (`further_dagster.testing.postgres`); verification and the shared switch are the
artifact store's (`ArtifactStore(verify=..., shared=...)`), and so is fsync
(`ArtifactStore(fsync=...)`), and the SQL index URL (`ArtifactStore(index_url=...)`,
`Session(index_url=...)`, `build_definitions(index_url=...)`; store/index/).

The default root falls back to `./.further` of the working directory when no `pyproject.toml`
lies above it and `FURTHER_ROOT` is unset; that fallback logs a warning (once per process) and
is refused when the working directory is world-writable and not owned by the current user
(anyone could have planted a `.further` there).

An empty value counts as unset. A value that is not allowed raises `ConfigurationError` naming
the variable, the value given and what is allowed, when the setting is read, never a raw
`ValueError` or `OSError` later.

The environment is read at call time, never cached, so a test that monkeypatches a variable, or
a process that sets one after import, is always seen. Each accessor takes the explicit value a
caller was given (`ArtifactStore(lease_s=...)`) first and validates it by the same rule, naming
the argument instead of the variable; `Settings.from_env()` reads them all at once.
"""

from __future__ import annotations

import logging
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from further_dagster._validate import (
    environ_of as _environ,
)
from further_dagster._validate import (
    first_non_directory as _first_non_directory,
)
from further_dagster._validate import (
    flag as _flag,
)
from further_dagster._validate import (
    positive_int as _positive_int,
)
from further_dagster._validate import (
    refuse as _refuse,
)
from further_dagster._validate import (
    seconds as _seconds,
)

ENV_ROOT = "FURTHER_ROOT"
ENV_LEASE_SECS = "FURTHER_LEASE_SECS"
ENV_WAIT_TIMEOUT_SECS = "FURTHER_WAIT_TIMEOUT_SECS"
ENV_MAX_ATTEMPTS = "FURTHER_MAX_ATTEMPTS"
ENV_DASK_ADDRESS = "FURTHER_DASK_ADDRESS"
ENV_STATIC_DAG_NODE_THRESH = "FURTHER_STATIC_DAG_NODE_THRESH"
ENV_PG_BIN = "FURTHER_PG_BIN"
ENV_VERIFY = "FURTHER_VERIFY"
ENV_SHARED_STORE = "FURTHER_SHARED_STORE"
ENV_FSYNC = "FURTHER_FSYNC"
ENV_INDEX_URL = "FURTHER_INDEX_URL"
ENV_MAX_UNROLL = "FURTHER_MAX_UNROLL"
ENV_GIT_DIRTY = "FURTHER_GIT_DIRTY"

DEFAULT_ROOT_DIR_NAME = ".further"
DEFAULT_LEASE_S = 15.0
MIN_LEASE_S = 0.5
MIN_HEARTBEAT_S = 0.2
DEFAULT_WAIT_TIMEOUT_S = 3600.0
DEFAULT_MAX_ATTEMPTS = 3
# A small chapter saves little over DASK's per-instance path (one graph per chapter is one
# scheduler update either way); the saving grows with the chapter's dependency levels.
DEFAULT_STATIC_DAG_NODE_THRESH = 50
DEFAULT_MAX_UNROLL = 100_000  # far beyond a real loop, well before resolution exhausts memory
DEFAULT_PG_BIN = Path("/usr/lib/postgresql/15/bin")
INDEX_FILE_NAME = ".index.sqlite"  # starts with a dot: no project (an identifier) collides
INDEX_DISABLED = "none"
"""What `index_url` returns for `none`/`off`: the store keeps no SQL index."""

VerifyMode = Literal["digest", "size"]
"""How much of a stored result a load checks beyond its manifest: `digest` (sizes and blake2b
digests) or `size` (sizes only)."""

DEFAULT_VERIFY: VerifyMode = "digest"
VERIFY_MODES: tuple[VerifyMode, ...] = ("digest", "size")

log = logging.getLogger("further.settings")


@dataclass(frozen=True, slots=True)
class Settings:
    """Every setting, resolved and validated (see the table in this module's docstring)."""

    root: Path
    lease_s: float
    wait_timeout_s: float
    max_attempts: int
    dask_address: str | None
    pg_bin: Path
    verify: VerifyMode = DEFAULT_VERIFY
    shared_store: bool = False
    fsync: bool = False
    index_url: str | None = None
    """`FURTHER_INDEX_URL` as validated; None: the default SQLite file in the root."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read every setting from `environ` (default: `os.environ`, read now).

        Raises:
            ConfigurationError: the first setting whose value is not allowed.
        """
        return cls(
            root=store_root(environ=environ),
            lease_s=lease_s(environ=environ),
            wait_timeout_s=wait_timeout_s(environ=environ),
            max_attempts=max_attempts(environ=environ),
            dask_address=dask_address(environ=environ),
            pg_bin=pg_bin(environ=environ),
            verify=verify(environ=environ),
            shared_store=shared_store(environ=environ),
            fsync=fsync(environ=environ),
            index_url=index_url(environ=environ),
        )


# --- accessors ----------------------------------------------------------------------------


def store_root(
    explicit: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
) -> Path:
    """The absolute store root: `explicit`, else `FURTHER_ROOT`, else the project default.

    The project default is `<project dir>/.further`, the project dir being the nearest
    ancestor of the working directory that holds a `pyproject.toml`; without one it is
    `./.further` of the working directory, which logs a warning once per process. The
    directory is not created here: reading a store must not write.

    Raises:
        ConfigurationError: the chosen path, or one of its ancestors, exists and is not a
            directory (naming `root`, `FURTHER_ROOT` or the default, and the path); or the
            default falls back to a working directory that is world-writable and not owned by
            the current user.
    """
    raw = _environ(environ).get(ENV_ROOT)
    if explicit is not None and os.fspath(explicit) != "":
        name, given, chosen = "root", repr(os.fspath(explicit)), Path(explicit)
        fix = "Pass a directory as root."
    elif raw:
        name, given, chosen = ENV_ROOT, repr(raw), Path(raw)
        fix = (
            f"Point {ENV_ROOT} at a directory, or unset it for the default "
            f"({DEFAULT_ROOT_DIR_NAME} beside the nearest pyproject.toml)."
        )
    else:
        here = Path(os.path.abspath(os.getcwd()))
        project = _project_dir(here)
        if project is None:
            _check_cwd_fallback(here)
        chosen = (project or here) / DEFAULT_ROOT_DIR_NAME
        name, given = "the default store root", repr(str(chosen))
        fix = f"Set {ENV_ROOT} to a directory."
    path = Path(os.path.abspath(chosen.expanduser()))
    blocker = _first_non_directory(path)
    if blocker is not None:
        where = "it points at" if blocker == path else f"it lies under {blocker}, which is"
        _refuse(
            name,
            given,
            f"{where} an existing file, and the store root must be a directory (or a path "
            "that does not exist yet, created on first write)",
            fix,
        )
    return path


def find_project_dir(start: Path | None = None) -> Path:
    """The nearest ancestor of `start` (default: cwd) holding a `pyproject.toml`, else `start`."""
    here = Path(os.path.abspath(start if start is not None else os.getcwd()))
    return _project_dir(here) or here


def _project_dir(here: Path) -> Path | None:
    for candidate in (here, *here.parents):
        if (candidate / "pyproject.toml").is_file():
            return candidate
    return None


_warned_cwd_fallback: set[str] = set()


def _check_cwd_fallback(cwd: Path) -> None:
    """The default root is about to be `<cwd>/.further` (no pyproject.toml above): warn once,
    and refuse a world-writable working directory that another user owns."""
    try:
        info = os.stat(cwd)
    except OSError:
        return  # a cwd that cannot be stat'ed is reported where the root is first used
    if info.st_mode & stat.S_IWOTH and info.st_uid != os.geteuid():
        _refuse(
            "the default store root",
            repr(str(cwd / DEFAULT_ROOT_DIR_NAME)),
            f"no pyproject.toml lies above the working directory {cwd}, and that directory is "
            f"world-writable and owned by uid {info.st_uid}, not by you (uid {os.geteuid()}): "
            f"anyone could have created its {DEFAULT_ROOT_DIR_NAME} and planted results in it",
            f"Set {ENV_ROOT} to a directory you own, pass root=..., or run from your project "
            "(a directory with a pyproject.toml).",
        )
    if str(cwd) not in _warned_cwd_fallback:
        _warned_cwd_fallback.add(str(cwd))
        log.warning(
            "no pyproject.toml above %s and %s is unset: the store root is %s; set %s (or run "
            "from your project) to choose it",
            cwd,
            ENV_ROOT,
            cwd / DEFAULT_ROOT_DIR_NAME,
            ENV_ROOT,
        )


def lease_s(explicit: float | None = None, *, environ: Mapping[str, str] | None = None) -> float:
    """Seconds a lease lasts without a heartbeat: `explicit`, else `FURTHER_LEASE_SECS`, else 15.

    Raises:
        ConfigurationError: not a finite number >= `MIN_LEASE_S`.
    """
    return _seconds(
        explicit,
        "lease_s",
        ENV_LEASE_SECS,
        environ,
        default=DEFAULT_LEASE_S,
        minimum=MIN_LEASE_S,
        why=f" (the lease heartbeat runs every {MIN_HEARTBEAT_S} s at best)",
    )


def wait_timeout_s(
    explicit: float | None = None, *, environ: Mapping[str, str] | None = None
) -> float:
    """Seconds to wait for another process's live lease before `LockTimeout`: `explicit`, else
    `FURTHER_WAIT_TIMEOUT_SECS`, else 3600.

    Raises:
        ConfigurationError: not a finite number >= 0.
    """
    return _seconds(
        explicit,
        "wait_timeout_s",
        ENV_WAIT_TIMEOUT_SECS,
        environ,
        default=DEFAULT_WAIT_TIMEOUT_S,
        minimum=0.0,
        why="",
    )


def max_attempts(explicit: int | None = None, *, environ: Mapping[str, str] | None = None) -> int:
    """Failed attempts after which the stored error is raised without running again:
    `explicit`, else `FURTHER_MAX_ATTEMPTS`, else 3.

    Raises:
        ConfigurationError: not an integer >= 1.
    """
    return _positive_int(
        explicit,
        "max_attempts",
        ENV_MAX_ATTEMPTS,
        environ,
        default=DEFAULT_MAX_ATTEMPTS,
        why="the number of failed attempts before giving up",
    )


def max_unroll(*, environ: Mapping[str, str] | None = None) -> int:
    """ITER steps a resolution unrolls on one path before `UnrollLimitError`:
    `FURTHER_MAX_UNROLL`, else 100000.

    Raises:
        ConfigurationError: not an integer >= 1.
    """
    return _positive_int(
        None,
        "max_unroll",
        ENV_MAX_UNROLL,
        environ,
        default=DEFAULT_MAX_UNROLL,
        why="ITER steps unrolled on one path",
    )


def static_dag_node_thresh(
    explicit: int | None = None, *, environ: Mapping[str, str] | None = None
) -> int:
    """The smallest static chapter DASK_STATIC_DAG submits as one Dask graph: `explicit`
    (`run_missing(static_dag_node_thresh=...)`), else `FURTHER_STATIC_DAG_NODE_THRESH`, else
    50.

    Raises:
        ConfigurationError: not an integer >= 1.
    """
    return _positive_int(
        explicit,
        "static_dag_node_thresh",
        ENV_STATIC_DAG_NODE_THRESH,
        environ,
        default=DEFAULT_STATIC_DAG_NODE_THRESH,
        why="instances in a static chapter",
    )


def dask_address(*, environ: Mapping[str, str] | None = None) -> str | None:
    """`FURTHER_DASK_ADDRESS` (a scheduler address), or None for a local cluster."""
    raw = _environ(environ).get(ENV_DASK_ADDRESS)
    return (raw.strip() or None) if raw else None


def pg_bin(
    explicit: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
) -> Path:
    """PostgreSQL's bin directory for the throwaway test server: `explicit`, else
    `FURTHER_PG_BIN`, else `/usr/lib/postgresql/15/bin`.

    A directory that does not exist is allowed here (the server reports the missing binaries
    with how to install them); one that is a file is not.

    Raises:
        ConfigurationError: the path exists and is not a directory.
    """
    raw = _environ(environ).get(ENV_PG_BIN)
    if explicit is not None and os.fspath(explicit) != "":
        name, given, chosen = "bin_dir", repr(os.fspath(explicit)), Path(explicit)
    elif raw:
        name, given, chosen = ENV_PG_BIN, repr(raw), Path(raw)
    else:
        return DEFAULT_PG_BIN
    path = chosen.expanduser()
    if os.path.lexists(path) and not path.is_dir():
        _refuse(
            name,
            given,
            "it is not a directory; it must be PostgreSQL's bin directory (holding initdb, "
            "pg_ctl, createdb and postgres)",
            f"Unset it for the default, {DEFAULT_PG_BIN}.",
        )
    return path


def verify(explicit: str | None = None, *, environ: Mapping[str, str] | None = None) -> VerifyMode:
    """What every load checks of a stored result: `explicit`, else `FURTHER_VERIFY`, else
    `digest` (each file's size and blake2b digest); `size` checks sizes only, for stores of
    huge files whose hashing would dominate a load. `further-dagster verify` always checks
    digests.

    Raises:
        ConfigurationError: neither `digest` nor `size`.
    """
    allowed = "it must be 'digest' (sizes and digests checked on load) or 'size' (sizes only)"
    if explicit is not None:
        if explicit not in VERIFY_MODES:
            _refuse("verify", repr(explicit), allowed)
        return explicit
    raw = _environ(environ).get(ENV_VERIFY)
    if not raw:
        return DEFAULT_VERIFY
    value = raw.strip().lower()
    for mode in VERIFY_MODES:
        if value == mode:
            return mode
    _refuse(ENV_VERIFY, repr(raw), allowed, f"Unset it for the default, {DEFAULT_VERIFY}.")


def shared_store(explicit: bool | None = None, *, environ: Mapping[str, str] | None = None) -> bool:
    """Whether the store root is shared between users: `explicit`, else
    `FURTHER_SHARED_STORE`, else False. A shared store loads pickled contributions from
    instance directories that other users own or can write; an unshared one refuses them
    (`UntrustedPickleError`), since unpickling runs code the file carries.

    Raises:
        ConfigurationError: not a boolean (1/true/yes/on or 0/false/no/off).
    """
    if explicit is not None:
        if not isinstance(explicit, bool):
            _refuse("shared", repr(explicit), "it must be True or False")
        return explicit
    return _flag(ENV_SHARED_STORE, environ, "the root is shared between users")


def fsync(explicit: bool | None = None, *, environ: Mapping[str, str] | None = None) -> bool:
    """Whether commits and state records are flushed to disk: `explicit`, else `FURTHER_FSYNC`,
    else False. With it, every file of a result and its temporary directory are fsynced before
    the commit rename (and the instance directory after it), so a power loss cannot leave a
    committed result with torn files; without it a power loss can, and the manifest's digests
    detect it on load. It costs one flush per file, per computed instance (see
    `further_dagster.store.durability`).

    Raises:
        ConfigurationError: not a boolean (1/true/yes/on or 0/false/no/off).
    """
    if explicit is not None:
        if not isinstance(explicit, bool):
            _refuse("fsync", repr(explicit), "it must be True or False")
        return explicit
    return _flag(ENV_FSYNC, environ, "fsync every commit")


def git_dirty(*, environ: Mapping[str, str] | None = None) -> bool:
    """Whether provenance records if the git checkout had uncommitted changes: `FURTHER_GIT_DIRTY`,
    else True. The check is one `git status` per process (store/provenance.py); a checkout
    so large that it is slow can turn it off, and the record then says "unknown".

    Raises:
        ConfigurationError: not a boolean (1/true/yes/on or 0/false/no/off).
    """
    return _flag(ENV_GIT_DIRTY, environ, "record whether the git checkout is dirty", default=True)


_INDEX_URL = re.compile(r"(?P<scheme>sqlite|postgresql)(?P<driver>\+[A-Za-z0-9_]+)?://(?P<rest>.*)")
_PASSWORD = re.compile(r"(?P<head>://[^:/@]*:)[^@]*(?P<at>@)")


def index_url(
    explicit: str | None = None, *, environ: Mapping[str, str] | None = None
) -> str | None:
    """The SQL index URL: `explicit`, else `FURTHER_INDEX_URL`; None when neither is set (the
    store then uses `default_index_url(root)`), `INDEX_DISABLED` for `none`/`off`.

    `postgresql://...` is returned as `postgresql+psycopg2://...` (SQLAlchemy 2.1 reads a bare
    `postgresql://` as psycopg 3, which is not installed; psycopg2 is, as for Dagster).

    Raises:
        ConfigurationError: not a `sqlite:///...` or `postgresql://...` URL, nor none/off (the
            message shows the URL without its password).
    """
    if explicit is not None and explicit != "":
        name, raw = "index_url", explicit
    else:
        name, raw = ENV_INDEX_URL, _environ(environ).get(ENV_INDEX_URL) or ""
        if not raw.strip():
            return None
    if not isinstance(raw, str):
        _refuse(name, repr(raw), "it must be a URL string, or 'none' for no index")
    value = raw.strip()
    if value.lower() in ("none", "off"):
        return INDEX_DISABLED
    match = _INDEX_URL.fullmatch(value)
    if match is None or not match["rest"]:
        _refuse(
            name,
            repr(redact_url(value)),
            "it must be a SQLAlchemy URL of SQLite (sqlite:////abs/path/index.sqlite) or "
            "PostgreSQL (postgresql://user:password@host:5432/dbname), or none/off for no index",
            "Unset it for the default, a SQLite file <root>/.index.sqlite.",
        )
    if match["scheme"] == "postgresql" and match["driver"] is None:
        return f"postgresql+psycopg2://{match['rest']}"
    return value


def default_index_url(root: Path) -> str:
    """`sqlite:///<root>/.index.sqlite`: the index of a store whose URL is not set."""
    return f"sqlite:///{root / INDEX_FILE_NAME}"


def redact_url(url: str) -> str:
    """`url` with its password replaced by `***`, for messages and logs."""
    return _PASSWORD.sub(r"\g<head>***\g<at>", url)


__all__ = [
    "DEFAULT_LEASE_S",
    "DEFAULT_MAX_ATTEMPTS",
    "DEFAULT_MAX_UNROLL",
    "DEFAULT_PG_BIN",
    "DEFAULT_ROOT_DIR_NAME",
    "DEFAULT_STATIC_DAG_NODE_THRESH",
    "DEFAULT_VERIFY",
    "DEFAULT_WAIT_TIMEOUT_S",
    "INDEX_DISABLED",
    "INDEX_FILE_NAME",
    "ENV_DASK_ADDRESS",
    "ENV_FSYNC",
    "ENV_INDEX_URL",
    "ENV_LEASE_SECS",
    "ENV_MAX_ATTEMPTS",
    "ENV_MAX_UNROLL",
    "ENV_PG_BIN",
    "ENV_ROOT",
    "ENV_SHARED_STORE",
    "ENV_STATIC_DAG_NODE_THRESH",
    "ENV_VERIFY",
    "ENV_WAIT_TIMEOUT_SECS",
    "MIN_HEARTBEAT_S",
    "MIN_LEASE_S",
    "VERIFY_MODES",
    "Settings",
    "VerifyMode",
    "dask_address",
    "default_index_url",
    "find_project_dir",
    "fsync",
    "index_url",
    "lease_s",
    "max_attempts",
    "max_unroll",
    "pg_bin",
    "redact_url",
    "shared_store",
    "static_dag_node_thresh",
    "store_root",
    "verify",
    "wait_timeout_s",
]
