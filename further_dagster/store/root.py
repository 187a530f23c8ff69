"""Where the store lives: one resolution order, used by every entry point.

A notebook, a Dagster run and a Slurm job must agree on the root without being told, so the
default is derived from the project (the nearest directory with a `pyproject.toml`), and the
environment variable lets a cluster job or a test point elsewhere.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT_ENV = "FURTHER_ROOT"
DEFAULT_DIR_NAME = ".further"


def find_project_dir(start: Path | None = None) -> Path:
    """The nearest ancestor of `start` (default: cwd) holding a `pyproject.toml`, else `start`."""
    here = Path(os.path.abspath(start if start is not None else os.getcwd()))
    for candidate in (here, *here.parents):
        if (candidate / "pyproject.toml").is_file():
            return candidate
    return here


def resolve_root(explicit: str | os.PathLike[str] | None = None) -> Path:
    """Return the absolute store root.

    Order: `explicit` argument, then the `FURTHER_ROOT` environment variable, then
    `<project dir>/.further` where the project dir is the nearest ancestor of the working
    directory containing `pyproject.toml` (the working directory itself if none does).
    `~` is expanded. The directory is not created here: reading a store must not write.
    """
    if explicit is not None and str(explicit) != "":
        chosen = Path(explicit)
    elif os.environ.get(ROOT_ENV):
        chosen = Path(os.environ[ROOT_ENV])
    else:
        chosen = find_project_dir() / DEFAULT_DIR_NAME
    return Path(os.path.abspath(chosen.expanduser()))
