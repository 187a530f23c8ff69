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
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from further_dagster.core.names import (
    RESERVED_CONTRIBUTION_NAMES,
    RESULT_ATTRIBUTE_NAMES,
    STORE_RECORD_NAMES,
    check_identifier,
)
from further_dagster.core.params import ITER, VAR, Opts, Specs, plain, runtime_kind
from further_dagster.core.project import Project
from further_dagster.core.versions import parse_range, parse_version

if TYPE_CHECKING:
    from packaging.version import Version

from further_dagster.errors import (
    CellDefinitionError,
    ContributionError,
    DynamicCallError,
    IncrementsError,
    ParameterKindError,
)


class Req:
    """A dependency edge in `req_cells`: the target cell and the values the caller passes.

    Args:
        target: "project.cell", "cell" (same project) or the Cell class.
        version: a PEP 440 range of the target's `api_version`, e.g. ">=1.2,<2.0": the
            highest version it allows is used (default: the target's current version).
        **values: Specs values for the target: plain values or `CONST(v)`; a `VAR([...])`
            sweeps the target, and the caller then receives a list of results, one per
            combination; `DYN` / `STUB` leave the value to the caller's make(), which calls
            `self.call(edge, field=value)`; `RAND(...)` is drawn when the caller runs (the
            result is `self.inputs[edge]`); `ITER(delta)` passes the caller's own value of the
            field plus `delta` (a loop, unrolled when the call is resolved; needs `switch`).
        switch: a call switch, `switch(specs) -> bool` on the caller's Specs: where it is
            False the edge is absent and `self.inputs[edge]` is None. Required with ITER.
        increments: an `Increments(...)` instruction for an `IncrementingCell` target (which
            increment the caller receives; an instruction, never identity).

    Raises:
        ParameterKindError: VAR and a runtime kind (DYN, STUB, RAND) on one edge; ITER
            without a switch, or with VAR or a runtime kind; a switch on a runtime edge.
        IncrementsError: `increments` is not an `Increments`.
    """

    __slots__ = ("target", "values", "kind", "version", "switch", "increments", "iter_fields")

    def __init__(
        self,
        target: str | type[Cell],
        *,
        version: str | None = None,
        switch: Callable[[Any], Any] | None = None,
        increments: Any = None,
        **values: Any,
    ) -> None:
        self.target = target
        # A predicate on the caller's Specs only: Opts never enter a key, and which edges exist
        # does (core/iterative.py).
        self.switch = switch
        self.increments = increments
        # A PEP 440 range of the target's api_version (core/versions.py); never a Spec.
        self.version = version
        if version is not None:
            parse_range(version, where=f"Req({target!r}, version={version!r})")
        self.values: dict[str, Any] = {name: plain(v) for name, v in values.items()}
        self.iter_fields = tuple(k for k, v in self.values.items() if isinstance(v, ITER))
        kinds = {runtime_kind(v) for v in self.values.values()} - {None}
        # The edge's kind: DYN/STUB need a self.call; an edge of RAND values alone is drawn by
        # the framework before make().
        self.kind: str | None = next((k for k in ("DYN", "STUB", "RAND") if k in kinds), None)
        if self.kind is not None and self.swept:
            raise ParameterKindError(
                f"{self!r}: VAR and {self.kind} on one edge cannot be combined; sweep the "
                f"dynamic call inside make() instead (call self.call once per value)"
            )
        _check_conditional(self)

    @property
    def conditional(self) -> bool:
        """The edge's values or presence depend on the caller's Specs (a switch, ITER)."""
        return self.switch is not None or bool(self.iter_fields)

    @property
    def stepping(self) -> bool:
        """An ITER edge with a non-zero delta: a step of a loop (cycles pass through one)."""
        return any(self.values[name].delta != 0 for name in self.iter_fields)

    @property
    def swept(self) -> bool:
        return any(isinstance(v, VAR) for v in self.values.values())

    @property
    def static_values(self) -> dict[str, Any]:
        """The values known at definition time (everything but DYN/STUB/RAND)."""
        return {k: v for k, v in self.values.items() if runtime_kind(v) is None}

    def __repr__(self) -> str:
        name = self.target if isinstance(self.target, str) else self.target.full_name
        args = "".join(f", {k}={v!r}" for k, v in self.values.items())
        pin = f", version={self.version!r}" if self.version is not None else ""
        extra = ", switch=..." if self.switch is not None else ""
        if self.increments is not None:
            extra += f", increments={self.increments!r}"
        return f"Req({name!r}{pin}{args}{extra})"


def _check_conditional(req: Req) -> None:
    """The rules of switches, ITER and `increments=` on one edge."""
    if req.stepping and req.switch is None:
        fields = ", ".join(req.iter_fields)
        raise ParameterKindError(
            f"{req!r}: an ITER edge needs a call switch that turns it off at the stopping "
            f"point, e.g. switch=lambda s: s.{req.iter_fields[0]} > 0 (ITER on: {fields}); "
            "without one the loop never ends"
        )
    if req.switch is not None and not callable(req.switch):
        raise ParameterKindError(
            f"{req!r}: switch={req.switch!r} is not callable; give a predicate on the "
            "caller's Specs, e.g. switch=lambda s: s.iteration > 0"
        )
    if req.iter_fields and req.swept:
        raise ParameterKindError(f"{req!r}: ITER and VAR on one edge cannot be combined")
    if req.switch is not None and req.kind is not None:
        raise ParameterKindError(
            f"{req!r}: a switch on a {req.kind} edge is not supported; decide inside make() "
            "whether to call it"
        )
    if req.increments is not None:
        from further_dagster.core.iterative import Increments

        if not isinstance(req.increments, Increments):
            raise IncrementsError(
                f"{req!r}: increments={req.increments!r}; give Increments(exactly=N), "
                "Increments(at_least=N), Increments(best=True) or Increments(more=K)"
            )


class DynamicDispatch(typing.Protocol):
    """What `Cell.call` delegates to (the engine provides it while make() runs)."""

    def __call__(self, edge: str, values: Mapping[str, Any]) -> Contributions: ...


class Contributions:
    """The stored outputs of one instance: `res["name"]` or `res.name`, plus `res.key` (its
    logic key), `res.specs`, `res.cell` and `res.increment` (an IncrementingCell's increment
    index, else None). Deliberately not a dict subclass, so a
    contribution called `values` or `items` is reachable as an attribute."""

    __slots__ = ("_values", "key", "specs", "cell", "increment")

    def __init__(
        self,
        values: Mapping[str, Any],
        *,
        key: str,
        specs: Specs,
        cell: str,
        increment: int | None = None,
    ) -> None:
        self._values = dict(values)
        self.key = key
        self.specs = specs
        self.cell = cell
        # Which increment of an IncrementingCell this is (1-based); None for any other cell.
        self.increment = increment

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
    when the computation changes: it invalidates stored results), `api_version` (the cell's
    PEP 440 version, bumped when Specs or contributions change shape; a value other than 1
    enters the key, so an older class kept with `archived=True` keeps its results), `Specs`,
    `Opts`, `req_cells`, `contributions`,
    `project_params` (names of project parameters the cell subscribes to; each must also be a
    field of its Specs), `in_parallel` (False forces inline execution), `mode` (preferred
    execution mode), `track_libraries` (package versions that enter the logic key), `slurm`
    (a SlurmSpec or a list of them, used by the Slurm executor), `codec` (None, or "json",
    "npy" or "parquet": every contribution is stored with that codec, and pickle is refused
    when the result is written and when it is read), `recorded` (contributions written to the
    SQL index at commit even beyond the automatic small-value rule, up to 1 MiB of JSON).

    Inside `make()`: `self.specs`, `self.opts`, `self.inputs[name]` (the dependency's
    Contributions, or a list of them for a swept edge; for a RAND edge the child of the drawn
    value), `self.call(edge, **values)` for a DYN/STUB edge, `self.log` (captured into the
    artifact directory), `self.artifact_dir` (extra files written here are committed with the
    result), and `self.key`.
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
    recorded: ClassVar[tuple[str, ...]] = ()
    is_resource: ClassVar[bool] = False
    is_incrementing: ClassVar[bool] = False
    archived: ClassVar[bool] = False
    version: ClassVar[Version]
    asset_name: ClassVar[str]

    def __init_subclass__(
        cls,
        *,
        project: Project | None = None,
        name: str | None = None,
        abstract: bool = False,
        archived: bool = False,
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
        cls.archived = archived
        cls.version = parse_version(cls.api_version, where=f"{where}.api_version")
        # An archived version is addressed (and shown in Dagster) with its version.
        cls.full_name = f"{project.address}.{cls.name}" + (f"@{cls.version}" if archived else "")
        # Dagster names allow only [A-Za-z0-9_]: an archived fit@1.4 is the asset fit_v1_4.
        cls.asset_name = (
            f"{cls.name}_v{re.sub(r'[^A-Za-z0-9]', '_', str(cls.version))}"
            if archived
            else cls.name
        )
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
        dynamic: DynamicDispatch | None = None,
        increment: int | None = None,
    ) -> None:
        self.increment = increment
        self.specs = specs
        self.opts = opts
        self.inputs = inputs
        self.key = key
        self.log = log
        self.artifact_dir = artifact_dir
        self.release = release
        self._dynamic = dynamic
        # the store's SQL index, set by the engine while make() runs: self.db.query(sql)
        self.db: Any = None

    def call(self, edge: str, **values: Any) -> Contributions:
        """Inside make(): compute (or load) the child of the DYN/STUB edge `edge` with the
        values the edge leaves to the caller, memoized like any instance; returns its
        contributions. The child is recorded in this instance's provenance.

        Raises:
            DynamicCallError: `edge` is not a DYN/STUB edge of this cell, or a DYN/STUB value
                of the edge is not given.
        """
        if self._dynamic is None:
            raise DynamicCallError(
                f"{type(self).full_name}.call({edge!r}): this cell has no DYN/STUB edges; "
                f"declare one in req_cells, e.g. Req('cell', field=DYN)"
            )
        return self._dynamic(edge, values)

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
    if "version" in cls.Specs.model_fields:
        raise CellDefinitionError(
            f"{where}.Specs has a field 'version', which is reserved: it names the target's "
            "api_version in Req(..., version='>=1,<2'). Rename the field (e.g. 'data_version')."
        )
    for reserved in ("switch", "increments"):
        if reserved in cls.Specs.model_fields:
            raise CellDefinitionError(
                f"{where}.Specs has a field {reserved!r}, which is reserved: Req(..., "
                f"{reserved}=...) is an edge's {reserved} instruction. Rename the field."
            )
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
    if isinstance(cls.recorded, str) or not all(name in cls.contributions for name in cls.recorded):
        raise CellDefinitionError(
            f"{where}.recorded = {cls.recorded!r}: name contributions of the cell in a tuple, "
            f"e.g. recorded = ('metrics',); its contributions: {sorted(cls.contributions)}"
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
