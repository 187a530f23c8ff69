"""Every `FURTHER_*` setting, read and validated in this one module.

    variable                   default                       allowed
    -------------------------  ----------------------------  ----------------------------------
    FURTHER_ROOT               .further beside the nearest   a directory, or a path that does
                               pyproject.toml above the      not exist yet (created on first
                               working directory (the        write); ~ is expanded, a relative
                               working directory if none)    path is taken from the working dir
    FURTHER_LEASE_SECS         60                            finite seconds >= 0.5 (MIN_LEASE_S:
                                                             the heartbeat runs every 0.2 s at
                                                             best)
    FURTHER_WAIT_TIMEOUT_SECS  3600                          finite seconds >= 0
    FURTHER_MAX_ATTEMPTS       3                             an integer >= 1
    FURTHER_DASK_ADDRESS       unset: a local cluster        a scheduler address, e.g.
                                                             tcp://10.0.0.5:8786
    FURTHER_PG_BIN             /usr/lib/postgresql/15/bin    a directory with initdb, pg_ctl,
                                                             createdb and postgres

Who reads them: the root, the lease, the wait timeout and the attempts are the artifact store's
(`ArtifactStore`, `ReleaseHistory`, and through them `Session` and the Dagster resources); the
Dask address is the engine's Dask backend's; the PostgreSQL bin directory is the throwaway test
server's (`further_dagster.testing.postgres`).

An empty value counts as unset. A value that is not allowed raises `ConfigurationError` naming
the variable, the value given and what is allowed, when the setting is read, never a raw
`ValueError` or `OSError` later.

The environment is read at call time, never cached, so a test that monkeypatches a variable, or
a process that sets one after import, is always seen. Each accessor takes the explicit value a
caller was given (`ArtifactStore(lease_s=...)`) first and validates it by the same rule, naming
the argument instead of the variable; `Settings.from_env()` reads them all at once.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from further_dagster.errors import ConfigurationError

ENV_ROOT = "FURTHER_ROOT"
ENV_LEASE_SECS = "FURTHER_LEASE_SECS"
ENV_WAIT_TIMEOUT_SECS = "FURTHER_WAIT_TIMEOUT_SECS"
ENV_MAX_ATTEMPTS = "FURTHER_MAX_ATTEMPTS"
ENV_DASK_ADDRESS = "FURTHER_DASK_ADDRESS"
ENV_PG_BIN = "FURTHER_PG_BIN"

DEFAULT_ROOT_DIR_NAME = ".further"
DEFAULT_LEASE_S = 60.0
MIN_LEASE_S = 0.5
MIN_HEARTBEAT_S = 0.2
DEFAULT_WAIT_TIMEOUT_S = 3600.0
DEFAULT_MAX_ATTEMPTS = 3
DEFAULT_PG_BIN = Path("/usr/lib/postgresql/15/bin")


@dataclass(frozen=True, slots=True)
class Settings:
    """Every setting, resolved and validated (see the table in this module's docstring)."""

    root: Path
    lease_s: float
    wait_timeout_s: float
    max_attempts: int
    dask_address: str | None
    pg_bin: Path

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
        )


# --- accessors ----------------------------------------------------------------------------


def store_root(
    explicit: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
) -> Path:
    """The absolute store root: `explicit`, else `FURTHER_ROOT`, else the project default.

    The project default is `<project dir>/.further`, the project dir being the nearest
    ancestor of the working directory that holds a `pyproject.toml`. The directory is not
    created here: reading a store must not write.

    Raises:
        ConfigurationError: the chosen path, or one of its ancestors, exists and is not a
            directory (naming `root`, `FURTHER_ROOT` or the default, and the path).
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
        chosen = find_project_dir() / DEFAULT_ROOT_DIR_NAME
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
    for candidate in (here, *here.parents):
        if (candidate / "pyproject.toml").is_file():
            return candidate
    return here


def lease_s(explicit: float | None = None, *, environ: Mapping[str, str] | None = None) -> float:
    """Seconds a lease lasts without a heartbeat: `explicit`, else `FURTHER_LEASE_SECS`, else 60.

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
    allowed = "it must be an integer >= 1 (the number of failed attempts before giving up)"
    if explicit is not None:
        if isinstance(explicit, bool) or not isinstance(explicit, numbers.Integral):
            _refuse("max_attempts", repr(explicit), allowed)
        value = int(explicit)
        if value < 1:
            _refuse("max_attempts", repr(explicit), allowed)
        return value
    raw = _environ(environ).get(ENV_MAX_ATTEMPTS)
    if not raw:
        return DEFAULT_MAX_ATTEMPTS
    hint = f"Unset it for the default, {DEFAULT_MAX_ATTEMPTS}."
    try:
        value = int(raw.strip(), 10)
    except ValueError:
        _refuse(ENV_MAX_ATTEMPTS, repr(raw), allowed, hint)
    if value < 1:
        _refuse(ENV_MAX_ATTEMPTS, repr(raw), allowed, hint)
    return value


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


# --- validation ---------------------------------------------------------------------------


def _environ(environ: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if environ is None else environ


def _seconds(
    explicit: float | None,
    argument: str,
    variable: str,
    environ: Mapping[str, str] | None,
    *,
    default: float,
    minimum: float,
    why: str,
) -> float:
    allowed = f"it must be a finite number of seconds >= {minimum:g}{why}"
    if explicit is not None:
        if isinstance(explicit, bool) or not isinstance(explicit, numbers.Real):
            _refuse(argument, repr(explicit), allowed)
        value = float(explicit)
        if not (math.isfinite(value) and value >= minimum):
            _refuse(argument, repr(explicit), allowed)
        return value
    raw = _environ(environ).get(variable)
    if not raw:
        return default
    hint = f"Unset it for the default, {default:g}."
    try:
        value = float(raw)
    except ValueError:
        _refuse(variable, repr(raw), allowed, hint)
    if not (math.isfinite(value) and value >= minimum):
        _refuse(variable, repr(raw), allowed, hint)
    return value


def _first_non_directory(path: Path) -> Path | None:
    """`path` or its nearest existing ancestor if that is not a directory, else None."""
    probe = path
    while True:
        if os.path.isdir(probe):
            return None
        if os.path.lexists(probe):
            return probe
        parent = probe.parent
        if parent == probe:
            return None
        probe = parent


def _refuse(name: str, given: str, allowed: str, hint: str = "") -> NoReturn:
    raise ConfigurationError(
        f"{name}={given} is not allowed: {allowed}." + (f" {hint}" if hint else "")
    )


__all__ = [
    "DEFAULT_LEASE_S",
    "DEFAULT_MAX_ATTEMPTS",
    "DEFAULT_PG_BIN",
    "DEFAULT_ROOT_DIR_NAME",
    "DEFAULT_WAIT_TIMEOUT_S",
    "ENV_DASK_ADDRESS",
    "ENV_LEASE_SECS",
    "ENV_MAX_ATTEMPTS",
    "ENV_PG_BIN",
    "ENV_ROOT",
    "ENV_WAIT_TIMEOUT_SECS",
    "MIN_HEARTBEAT_S",
    "MIN_LEASE_S",
    "Settings",
    "dask_address",
    "find_project_dir",
    "lease_s",
    "max_attempts",
    "pg_bin",
    "store_root",
    "wait_timeout_s",
]
