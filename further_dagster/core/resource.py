"""Resource cells: cells over external data whose version is a cheap "release" string.

    standard cell: output = f(inputs)
    resource cell: output = f(specs, external state), the state tracked as a release

`get_release(specs)` is a fast, stateless check (a file stat, an HTTP HEAD, a MAX(updated_at)
query) that identifies the current state of the data without reading it. The resolved release
enters the instance's logic key, and so every downstream key; the engine calls get_release()
before deciding whether make() runs, so a stored release costs the check and nothing else.
The freshness policy that chose the release never enters a key.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import inspect
import os
from typing import Any, ClassVar

from further_dagster.core.cell import Cell
from further_dagster.core.freshness import Freshness, Latest
from further_dagster.core.params import Specs
from further_dagster.errors import CellDefinitionError, ReleaseError


class ResourceCell(Cell, abstract=True):
    """Base class of cells that read external data.

    Declare one like a cell, plus a `get_release` classmethod and optionally a policy::

        class Measurements(ResourceCell, project=demo):
            '''Field measurements, as committed to data/measurements.csv.'''
            freshness = current(3600)  # default: latest()
            class Specs(Specs):
                path: str = "data/measurements.csv"
            contributions = {"table": pd.DataFrame}

            @classmethod
            def get_release(cls, specs):
                return file_release(specs.path)   # mtime + size: no data read

            def make(self):
                return {"table": pd.read_csv(self.specs.path)}

    `get_release` must be fast and stateless and return a non-empty string. `self.release` in
    make() is the release being computed. A resource cell has no req_cells: it is a source (in
    Dagster, an observable source asset); cells that need it require it.
    """

    is_resource: ClassVar[bool] = True
    freshness: ClassVar[Freshness] = Latest()

    def __init_subclass__(cls, *, abstract: bool = False, **kwargs: Any) -> None:
        if not abstract:
            _validate_resource(cls, f"{cls.__module__}.{cls.__qualname__}")
        super().__init_subclass__(abstract=abstract, **kwargs)

    @classmethod
    def get_release(cls, specs: Any) -> str:
        """The current release of the data these Specs point at, without reading the data."""
        raise NotImplementedError(f"{cls.full_name} does not implement get_release()")


def _validate_resource(cls: type[ResourceCell], where: str) -> None:
    static = inspect.getattr_static(cls, "get_release", None)
    if static is inspect.getattr_static(ResourceCell, "get_release"):
        raise CellDefinitionError(
            f"{where} is a ResourceCell without get_release(): define "
            "`@classmethod def get_release(cls, specs) -> str` returning a cheap version string "
            "(modification time, content hash, ETag, high-water mark)."
        )
    if not isinstance(static, (classmethod, staticmethod)):
        raise CellDefinitionError(
            f"{where}.get_release must be a classmethod (it runs before any instance exists): "
            "add @classmethod above `def get_release(cls, specs)`."
        )
    if cls.req_cells:
        raise CellDefinitionError(
            f"{where}: a resource cell cannot have req_cells (it is a source of external data, "
            "whose release depends on its Specs only). Move the dependency into a cell that "
            "requires both."
        )
    if not isinstance(cls.freshness, Freshness):
        raise CellDefinitionError(
            f"{where}.freshness is {cls.freshness!r}; use latest(), current(seconds), present(), "
            "release(pin) or date_range(start, end) from further_dagster."
        )


def call_get_release(cell: type[Cell], specs: Specs) -> str:
    """Run `cell.get_release(specs)` and check its answer (a ReleaseError says how to fix)."""
    get = getattr(cell, "get_release", None)
    if get is None:
        raise ReleaseError(f"{cell.full_name} is a resource cell without get_release()")
    try:
        value = get(specs)
    except Exception as exc:
        raise ReleaseError(
            f"{cell.full_name}.get_release({_specs_text(specs)}) raised "
            f"{type(exc).__name__}: {exc}. Fix the resource (is the file, URL or table there?) "
            "or get_release itself; it must be a fast, stateless check that returns a string."
        ) from exc
    if not isinstance(value, str) or not value:
        raise ReleaseError(
            f"{cell.full_name}.get_release({_specs_text(specs)}) returned {value!r} "
            f"({type(value).__name__}); it must return a non-empty str identifying the state of "
            "the data, e.g. a modification time, a content hash, an ETag or a high-water mark."
        )
    return value


def _specs_text(specs: Any) -> str:
    try:
        return ", ".join(f"{k}={v!r}" for k, v in dict(specs).items())
    except Exception:
        return repr(specs)


def file_release(path: str | os.PathLike[str], *, content: bool = False) -> str:
    """A release for a file: its modification time (UTC, ns) and size, read with one stat; or,
    with `content=True`, a blake2b hash of its bytes (reads the file: for small files, or when
    touching a file without changing it must not count as a new release)."""
    if content:
        h = hashlib.blake2b(digest_size=16)
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        return f"blake2b:{h.hexdigest()}"
    st = os.stat(path)
    when = dt.datetime.fromtimestamp(st.st_mtime_ns // 1_000_000_000, tz=dt.UTC)
    return f"{when:%Y-%m-%dT%H:%M:%S}.{st.st_mtime_ns % 1_000_000_000:09d}Z/{st.st_size}"


__all__ = [
    "ResourceCell",
    "call_get_release",
    "file_release",
]
