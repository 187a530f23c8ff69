"""Cells: named, versioned computations with Specs, Opts, req_cells and contributions.

A cell is a class. Everything the framework needs to plan (name, versions, parameter models,
dependencies, declared contributions) is a class attribute, checked when the class is created;
`make()` runs only when the instance's logic key is not stored.
"""

from __future__ import annotations

import logging
import re
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from further_dagster.core.names import (
    RESERVED_CONTRIBUTION_NAMES,
    RESULT_ATTRIBUTE_NAMES,
    STORE_RECORD_NAMES,
    check_identifier,
)
from further_dagster.core.params import VAR, Opts, Specs
from further_dagster.core.project import Project
from further_dagster.errors import CellDefinitionError, ContributionError


class Req:
    """A dependency edge in `req_cells`: the target cell and the values the caller passes.

    Args:
        target: "project.cell", "cell" (same project) or the Cell class.
        **values: Specs values for the target; a `VAR([...])` sweeps the target, and the caller
            then receives a list of results, one per combination.
    """

    __slots__ = ("target", "values")

    def __init__(self, target: str | type[Cell], **values: Any) -> None:
        self.target = target
        self.values: dict[str, Any] = values

    @property
    def swept(self) -> bool:
        return any(isinstance(v, VAR) for v in self.values.values())

    def __repr__(self) -> str:
        name = self.target if isinstance(self.target, str) else self.target.full_name
        args = "".join(f", {k}={v!r}" for k, v in self.values.items())
        return f"Req({name!r}{args})"


class Contributions:
    """The stored outputs of one instance: `res["name"]` or `res.name`, plus `res.key` (its
    logic key), `res.specs` and `res.cell`. Deliberately not a dict subclass, so a
    contribution called `values` or `items` is reachable as an attribute."""

    __slots__ = ("_values", "key", "specs", "cell")

    def __init__(self, values: Mapping[str, Any], *, key: str, specs: Specs, cell: str) -> None:
        self._values = dict(values)
        self.key = key
        self.specs = specs
        self.cell = cell

    def __getitem__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise KeyError(
                f"{self.cell} has no contribution {name!r}; it has {sorted(self._values)}"
            ) from None

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(
                f"{self.cell} has no contribution {name!r}; it has {sorted(self._values)}"
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._values

    def __iter__(self) -> typing.Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def get(self, name: str, default: Any = None) -> Any:
        return self._values.get(name, default)

    def to_dict(self) -> dict[str, Any]:
        """A plain dict name -> value."""
        return dict(self._values)

    def __repr__(self) -> str:
        return f"<{self.cell} {self.key[:12]} {sorted(self._values)}>"


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def check_type(value: Any, declared: Any) -> bool:
    """The contribution type rule: isinstance against a declared contribution type.

    Typing constructs check their origin (`list[int]` checks `list`), unions any member,
    `float` also takes an `int` (not a `bool`), and what is not a class (a `Literal`, a
    `TypeVar`) passes. Used after make() and again when a stored result is loaded.
    """
    if declared is Any or declared is object:
        return True
    origin = typing.get_origin(declared)
    if origin in (typing.Union, types.UnionType):
        return any(check_type(value, arg) for arg in typing.get_args(declared))
    if origin is not None:
        declared = origin
    if declared is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(declared, type):
        return isinstance(value, declared)
    return True


def type_can_pass(kind: type, declared: Any) -> bool:
    """True if a value of exact type `kind` can pass `check_type(value, declared)`: the same
    rule on types, so a store can refuse a file whose codec cannot produce the declared type
    before decoding it."""
    if declared is Any or declared is object:
        return True
    origin = typing.get_origin(declared)
    if origin in (typing.Union, types.UnionType):
        return any(type_can_pass(kind, arg) for arg in typing.get_args(declared))
    if origin is not None:
        declared = origin
    if declared is float:
        return issubclass(kind, (int, float)) and not issubclass(kind, bool)
    if isinstance(declared, type):
        return issubclass(kind, declared)
    return True


CELL_CODECS = ("json", "npy", "parquet")
"""What `Cell.codec` may name: the codecs that never run code when read (no pickle)."""


class Cell:
    """Base class of every cell.

    Declare a cell by subclassing with its project::

        class Train(Cell, project=demo):
            '''Fit a ridge regression.'''
            logic_version = 1
            class Specs(Specs):
                alpha: float = 1.0
            req_cells = {"data": Req("demo.features")}
            contributions = {"weights": np.ndarray}

            def make(self):
                X = self.inputs["data"].X
                return {"weights": ...}

    Class attributes: `name` (default: snake_case of the class name), `logic_version` (bump
    when the computation changes: it invalidates stored results), `api_version` (bump when
    Specs or contributions change shape), `Specs`, `Opts`, `req_cells`, `contributions`,
    `project_params` (names of project parameters the cell subscribes to; each must also be a
    field of its Specs), `in_parallel` (False forces inline execution), `mode` (preferred
    execution mode), `track_libraries` (package versions that enter the logic key), `slurm`
    (a SlurmSpec or a list of them, used by the Slurm executor), `codec` (None, or "json",
    "npy" or "parquet": every contribution is stored with that codec, and pickle is refused
    when the result is written and when it is read).

    Inside `make()`: `self.specs`, `self.opts`, `self.inputs[name]` (the dependency's
    Contributions, or a list of them for a swept edge), `self.log` (captured into the artifact
    directory), `self.artifact_dir` (extra files written here are committed with the result),
    and `self.key`.
    """

    name: ClassVar[str]
    full_name: ClassVar[str]
    project: ClassVar[Project]
    logic_version: ClassVar[str | int] = 1
    api_version: ClassVar[str | int] = 1
    Specs: ClassVar[type[Specs]] = Specs
    Opts: ClassVar[type[Opts]] = Opts
    req_cells: ClassVar[Mapping[str, Req]] = {}
    contributions: ClassVar[Mapping[str, Any]] = {}
    project_params: ClassVar[tuple[str, ...]] = ()
    in_parallel: ClassVar[bool] = True
    mode: ClassVar[str | None] = None
    track_libraries: ClassVar[tuple[str, ...]] = ()
    slurm: ClassVar[Any] = None
    codec: ClassVar[str | None] = None
    is_resource: ClassVar[bool] = False

    def __init_subclass__(
        cls,
        *,
        project: Project | None = None,
        name: str | None = None,
        abstract: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init_subclass__(**kwargs)
        if abstract:
            return
        where = f"{cls.__module__}.{cls.__qualname__}"
        if project is None:
            project = cls.__dict__.get("project") or getattr(cls, "project", None)
        if not isinstance(project, Project):
            raise CellDefinitionError(
                f"cell {where} has no project: declare it as `class {cls.__name__}(Cell, "
                "project=my_project)`."
            )
        cls.project = project
        if name is None:
            name = cls.__dict__.get("name") or _snake(cls.__name__)
        cls.name = check_identifier(
            "cell",
            name,
            fix=f"Pass name='...' in the class statement of {where}.",
        )
        cls.full_name = f"{project.name}.{cls.name}"
        _validate_declaration(cls, where)
        project.register(cls)

    # --- runtime ----------------------------------------------------------------------------

    def __init__(
        self,
        *,
        specs: Any,
        opts: Any,
        inputs: Mapping[str, Any],
        key: str,
        log: logging.Logger,
        artifact_dir: Path,
        release: str | None = None,
    ) -> None:
        self.specs = specs
        self.opts = opts
        self.inputs = inputs
        self.key = key
        self.log = log
        self.artifact_dir = artifact_dir
        self.release = release

    def make(self) -> Mapping[str, Any]:
        """Compute and return every declared contribution as a mapping name -> value."""
        raise NotImplementedError(f"{type(self).full_name} does not implement make()")

    @classmethod
    def check_contributions(cls, result: Any) -> dict[str, Any]:
        """Check what make() returned against the declaration; raise ContributionError."""
        if not isinstance(result, Mapping):
            raise ContributionError(
                f"{cls.full_name}.make() returned {type(result).__name__}; it must return a dict "
                f"with the declared contributions {sorted(cls.contributions)}."
            )
        undeclared = sorted(set(result) - set(cls.contributions))
        missing = sorted(set(cls.contributions) - set(result))
        if undeclared or missing:
            parts = []
            if undeclared:
                parts.append(f"undeclared {undeclared} (add them to `contributions` or drop them)")
            if missing:
                parts.append(f"missing {missing} (return them from make())")
            raise ContributionError(f"{cls.full_name}.make() returned " + "; ".join(parts) + ".")
        for field, declared in cls.contributions.items():
            if not check_type(result[field], declared):
                raise ContributionError(
                    f"{cls.full_name}.make() returned {type(result[field]).__name__} for "
                    f"contribution {field!r}, declared as "
                    f"{getattr(declared, '__name__', declared)}."
                )
        return dict(result)


def _validate_declaration(cls: type[Cell], where: str) -> None:
    if not (isinstance(cls.Specs, type) and issubclass(cls.Specs, Specs)):
        raise CellDefinitionError(f"{where}.Specs must subclass further_dagster.Specs")
    if not (isinstance(cls.Opts, type) and issubclass(cls.Opts, Opts)):
        raise CellDefinitionError(f"{where}.Opts must subclass further_dagster.Opts")
    if not isinstance(cls.contributions, Mapping) or not cls.contributions:
        raise CellDefinitionError(
            f"{where} declares no contributions: set `contributions = {{'name': type, ...}}`."
        )
    for contribution in cls.contributions:
        check_identifier("contribution", contribution, fix=f"Rename it in {where}.contributions.")
        if contribution in RESERVED_CONTRIBUTION_NAMES:
            raise CellDefinitionError(
                f"{where}: contribution name {contribution!r} is reserved (results expose "
                f"{sorted(RESULT_ATTRIBUTE_NAMES)} as attributes, and the store writes "
                f"{sorted(STORE_RECORD_NAMES)} records beside the contributions); rename it."
            )
    if cls.codec is not None and cls.codec not in CELL_CODECS:
        raise CellDefinitionError(
            f"{where}.codec = {cls.codec!r} is not allowed: it must be None (any codec, pickle "
            f"as the fallback) or one of {', '.join(repr(c) for c in CELL_CODECS)} (every "
            f"contribution stored with that codec; pickle refused)."
        )
    if not isinstance(cls.req_cells, Mapping):
        raise CellDefinitionError(f"{where}.req_cells must be a dict of name -> Req(...)")
    for edge, req in cls.req_cells.items():
        check_identifier("req_cells edge", edge, fix=f"Rename it in {where}.req_cells.")
        if not isinstance(req, Req):
            raise CellDefinitionError(
                f"{where}.req_cells[{edge!r}] is {req!r}; write Req('project.cell', **values)."
            )
    if isinstance(cls.project_params, str):
        raise CellDefinitionError(f"{where}.project_params must be a tuple of names, not a str")
    for param in cls.project_params:
        if param not in cls.project.params.model_fields:
            known = sorted(cls.project.params.model_fields) or "(none)"
            raise CellDefinitionError(
                f"{where} subscribes to project param {param!r}, which project "
                f"{cls.project.name!r} does not define; its params are {known}."
            )
        if param not in cls.Specs.model_fields:
            raise CellDefinitionError(
                f"{where} subscribes to project param {param!r} but its Specs have no field "
                f"{param!r} to receive it; add `{param}: ...` to {where}.Specs."
            )
    if not callable(getattr(cls, "make", None)) or cls.make is Cell.make:
        raise CellDefinitionError(f"{where} must define make(self) returning its contributions")
