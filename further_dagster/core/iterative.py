"""Iterative computations, the model side: call switches and ITER loops, incrementing cells.

**ITER loops.** `Req("refine", iteration=ITER(-1), switch=lambda s: s.iteration > 0)` lets a cell
require itself (or a loop of cells). The definition graph accepts a cycle only if every cycle
passes through an ITER edge (core/graph.py); the Resolver unrolls the loop when a call is
resolved: for each instance it evaluates the edge's switch on the caller's Specs, and where the
switch is on, the child's field is the caller's value plus the ITER delta. Where it is off, the
edge is absent (`self.inputs[edge]` is None) and, having no dependency, absent from the key.
Every step is its own memoized instance, so asking for `iteration=8` after `iteration=5`
computes only 6, 7 and 8. A switch sees Specs only: Opts never enter a key, and the set of
edges an instance has does.

**Incrementing cells.** An `IncrementingCell` computes one increment per `make_increment(self,
previous)`. The base instance (Specs, dependencies, logic key as for any cell) is never computed
itself; increment i is an instance of its own, keyed `increment_key(base key, i)`, that depends
on increment i-1. Which increment a caller receives is an instruction (`Increments(exactly=N)`,
`at_least=N`, `best=True`, `more=K`) resolved when the call is planned, against how many
increments the store holds (`CallContext.increment_counter`): never identity. As every
increment is a stored instance, the planner's rule (a stored instance is never descended into)
resumes a chain from its last stored increment, and a crash keeps every committed increment.

**Transformers.** A `Transformer` given at call time for an edge path (the syntax of addressed
values, core/addressing.py) reshapes the Specs of the instance reached there; the reshaped values
are its Specs (so its key follows) and the transformer is recorded in its provenance. Declared
with `project=p` it is registered on the project by name, so a Dagster run config can select it
as `{"fits/data": "Standardize"}` (`find_transformer`; an importable "module:Class" works too).
"""

from __future__ import annotations

import importlib
import numbers
import weakref
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from further_dagster.core.addressing import AddressNode, address_tree
from further_dagster.core.cell import Cell, Contributions, Req
from further_dagster.core.hashing import digest
from further_dagster.core.params import ITER, Specs, build_model
from further_dagster.errors import (
    AddressError,
    CellDefinitionError,
    DuplicateNameError,
    IncrementsError,
    SwitchError,
    TransformerError,
    UnrollLimitError,
)

if TYPE_CHECKING:
    from further_dagster.core.graph import DefinitionGraph
    from further_dagster.core.project import Project

PREVIOUS_EDGE = "previous_increment"
"""The dependency of increment i on increment i-1 (in `Instance.deps` and provenance)."""

IncrementCounter = Callable[[type[Cell], str], int]
"""`counter(cell, base_key) -> how many increments of the base instance are stored` (the
engine's `engine/increments.py` asks the store; core never imports it)."""


class Increments:
    """Which increment of an `IncrementingCell` a caller receives: exactly one of

    * `exactly=N`: increment N (computing up to it if fewer are stored);
    * `at_least=N`: the last stored increment if there are N or more, else increment N;
    * `best=True`: the last stored increment, computing the first if none is stored;
    * `more=K`: K increments beyond those stored.

    An instruction, resolved against the store when the call is planned; only the resolved
    increment index is identity.

    Raises:
        IncrementsError: not exactly one instruction, or a count that is not an integer >= 1.
    """

    __slots__ = ("kind", "count")

    def __init__(
        self,
        *,
        exactly: int | None = None,
        at_least: int | None = None,
        best: bool = False,
        more: int | None = None,
    ) -> None:
        given = {
            name: value
            for name, value in (("exactly", exactly), ("at_least", at_least), ("more", more))
            if value is not None
        }
        if best is not False and best is not True:
            raise IncrementsError(f"Increments(best={best!r}): best is True or False")
        chosen = [*given, *(["best"] if best else [])]
        if len(chosen) != 1:
            raise IncrementsError(
                f"Increments({', '.join(chosen) or 'nothing'}): give exactly one of "
                "exactly=N, at_least=N, best=True, more=K"
            )
        self.kind = chosen[0]
        self.count = 0
        if self.kind != "best":
            count = given[self.kind]
            if isinstance(count, bool) or not isinstance(count, numbers.Integral) or count < 1:
                raise IncrementsError(
                    f"Increments({self.kind}={count!r}): the count must be an integer >= 1"
                )
            self.count = int(count)

    def target(self, stored: int) -> int:
        """The increment this instruction resolves to when `stored` increments are stored."""
        if self.kind == "exactly":
            return self.count
        if self.kind == "at_least":
            return max(stored, self.count)
        if self.kind == "more":
            return stored + self.count
        return max(stored, 1)

    @property
    def token(self) -> bytes:
        """Tells instances resolved under different instructions apart in the resolver's
        cache (never in a logic key)."""
        return b"#" + self.kind.encode() + b"%d" % self.count

    def __repr__(self) -> str:
        value = "True" if self.kind == "best" else str(self.count)
        return f"Increments({self.kind}={value})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Increments) and (other.kind, other.count) == (
            self.kind,
            self.count,
        )

    def __hash__(self) -> int:
        return hash(("Increments", self.kind, self.count))


def increment_key(base: str, index: int) -> str:
    """The logic key of increment `index` (1-based) of the base instance keyed `base`."""
    return digest(["increment", base, index])


class IncrementingCell(Cell, abstract=True):
    """A cell computed one increment at a time ("anytime algorithms": MCMC chains, optimizers).

    Declare `make_increment(self, previous)` instead of make(): `previous` is the
    `Contributions` of increment `self.increment - 1` (None for the first), and it returns one
    increment's contributions (the declared `contributions`). Each increment is stored under its
    own key; `increments` (class attribute, default `Increments(best=True)`) is the instruction
    used when neither the call nor the requiring edge gives one.
    """

    is_incrementing: ClassVar[bool] = True
    increments: ClassVar[Increments] = Increments(best=True)
    increment: int | None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        if not kwargs.get("abstract", False):
            where = f"{cls.__module__}.{cls.__qualname__}"
            if "make" in cls.__dict__:
                raise CellDefinitionError(
                    f"{where} is an IncrementingCell: define make_increment(self, previous) "
                    "(one increment), not make()"
                )
            if getattr(cls, "make_increment", None) is IncrementingCell.make_increment:
                raise CellDefinitionError(
                    f"{where} must define make_increment(self, previous) returning one "
                    "increment's contributions"
                )
            if not isinstance(cls.increments, Increments):
                raise IncrementsError(
                    f"{where}.increments = {cls.increments!r}; give an Increments(...)"
                )
            if PREVIOUS_EDGE in cls.req_cells:
                raise CellDefinitionError(
                    f"{where}.req_cells has an edge {PREVIOUS_EDGE!r}, the name an increment's "
                    "dependency on the one before it uses; rename the edge"
                )
            if getattr(cls, "is_resource", False):
                raise CellDefinitionError(f"{where}: a resource cell cannot be incrementing")
        super().__init_subclass__(**kwargs)

    def make_increment(self, previous: Contributions | None) -> Mapping[str, Any]:
        """One increment's contributions; `previous` is the one before (None for the first)."""
        raise NotImplementedError

    def make(self) -> Mapping[str, Any]:
        inputs = dict(self.inputs)
        previous = inputs.pop(PREVIOUS_EDGE, None)
        self.inputs = inputs
        return self.make_increment(previous)


def switch_on(req: Req, caller: type[Cell], edge: str, specs: Specs) -> bool:
    """Is `caller`'s edge `edge` present for an instance with `specs`?

    Raises:
        SwitchError: the switch raised, or returned something that is not a bool.
    """
    switch = req.switch
    if switch is None:
        return True
    try:
        result = switch(specs)
    except Exception as exc:
        raise SwitchError(
            f"{caller.full_name}.req_cells[{edge!r}]: its switch raised "
            f"{type(exc).__name__}: {exc} for Specs {dict(specs.__dict__)!r}. A switch takes "
            "the caller's Specs, e.g. switch=lambda s: s.iteration > 0"
        ) from exc
    if result is True or result is False:
        return result
    if type(result).__name__ == "bool_":  # numpy's bool: no numpy import in core
        return bool(result)
    raise SwitchError(
        f"{caller.full_name}.req_cells[{edge!r}]: its switch returned {result!r} for Specs "
        f"{dict(specs.__dict__)!r}; it must return True (edge on) or False (edge off)"
    )


def edge_values(req: Req, specs: Specs) -> dict[str, Any]:
    """The edge's values for a caller with `specs`: each ITER field is the caller's value of
    the same field plus its delta."""
    if not req.iter_fields:
        return req.values
    values = dict(req.values)
    for name in req.iter_fields:
        marker: ITER = values[name]
        values[name] = getattr(specs, name) + marker.delta
    return values


def unroll_limit(
    target: type[Cell],
    caller: type[Cell],
    edge: str,
    limit: int,
    fields: tuple[str, ...],
    values: Mapping[str, Any],
) -> UnrollLimitError:
    """The error of an unrolling that went past `FURTHER_MAX_UNROLL` ITER steps."""
    at = ", ".join(f"{f}={values[f]!r}" for f in fields)
    return UnrollLimitError(
        f"{target.full_name}: unrolling the ITER edge {caller.full_name}.req_cells[{edge!r}] "
        f"went past {limit} steps (FURTHER_MAX_UNROLL) with its switch still on (at {at}). "
        f"Make the switch turn off at the stopping point (e.g. switch=lambda s: s.{fields[0]} "
        "> 0), or raise FURTHER_MAX_UNROLL for a deeper loop."
    )


def stuck(
    caller: type[Cell],
    edge: str,
    target: type[Cell],
    name: str,
    values: Mapping[str, Any],
    specs: Specs,
) -> UnrollLimitError:
    """The error of an ITER step whose field a session-level value overrode."""
    return UnrollLimitError(
        f"{caller.full_name}.req_cells[{edge!r}]: ITER passed {name}={values[name]!r} to "
        f"{target.full_name}, which resolved {name}={getattr(specs, name)!r}: a session-level "
        f"value (specs=, addressed=, a label's cell_specs or a project param) sets {name!r} on "
        f"every step, so the loop cannot advance. Set {name!r} only on the call of the cell "
        "itself."
    )


_SpecsModel = Specs  # the model class, where `Specs` names a class attribute below


class Transformer:
    """A call-time intervention on one edge (`session.call(..., transformers={"fits/data":
    Standardize})`): it reshapes the Specs of the instance that edge reaches, without touching
    the cells. Subclass it with `logic_version`, its own `Specs` (set them by instantiating:
    `Standardize(scale=2.0)`) and `transform(self, values)`, which receives the instance's full
    Specs values and returns the fields to change (or all of them). The result is the child's
    Specs, so its key follows; the transformer is recorded in the child's provenance.
    `class Standardize(Transformer, project=p)` also registers it on `p` by name, for a Dagster
    run config's `transformers` (`name=` to register it under another name).
    """

    logic_version: ClassVar[str | int] = 1
    Specs: ClassVar[type[Specs]] = Specs

    def __init_subclass__(
        cls, *, project: Project | None = None, name: str | None = None, **kwargs: Any
    ) -> None:
        """`class Standardize(Transformer, project=p)` registers it on `p` as "Standardize"
        (or `name=`), the name a Dagster run config selects it by.

        Raises:
            DuplicateNameError: another class is registered on `p` under that name.
            TransformerError: the name has a ':' (the run config's import-path separator).
        """
        super().__init_subclass__(**kwargs)
        if project is None:
            return
        key = name or cls.__name__
        if ":" in key:
            raise TransformerError(
                f"transformer name {key!r} ({_path(cls)}): a name has no ':' (run config reads "
                "'module:Class' as an import path); give another name='...'"
            )
        registered = _REGISTERED.setdefault(project, {})
        other = registered.get(key)
        if other is not None and _path(other) != _path(cls):  # a re-run notebook cell replaces
            raise DuplicateNameError(
                f"transformer {key!r} of project {project.name!r}: both {_path(other)} and "
                f"{_path(cls)}; give one of them name='...'"
            )
        registered[key] = cls

    def __init__(self, **values: Any) -> None:
        self.specs = build_model(
            type(self).Specs, values, where=f"transformer {type(self).__qualname__}"
        )

    def transform(self, values: dict[str, Any]) -> Mapping[str, Any]:
        """The changed Specs values of the instance at the edge."""
        raise NotImplementedError(f"{type(self).__qualname__} does not implement transform()")

    def record(self, path: str) -> dict[str, Any]:
        """What the child's provenance keeps of this transformer."""
        return {
            "path": path,
            "transformer": f"{type(self).__module__}.{type(self).__qualname__}",
            "logic_version": str(self.logic_version),
            "specs": self.specs.model_dump(mode="json"),
        }

    def apply(self, path: str, cell: type[Cell], specs: _SpecsModel) -> dict[str, Any]:
        """The Specs values of `cell` at `path` after this transformer.

        Raises:
            TransformerError: transform() raised, returned no mapping, or a field `cell`'s
                Specs lack.
        """
        where = f"transformers[{path!r}] = {type(self).__qualname__} (on {cell.full_name})"
        try:
            changed = self.transform(dict(specs.__dict__))
        except Exception as exc:
            raise TransformerError(
                f"{where}: transform() raised {type(exc).__name__}: {exc}"
            ) from exc
        if not isinstance(changed, Mapping):
            raise TransformerError(f"{where}: transform() returned {changed!r}; return a dict")
        unknown = sorted(set(changed) - set(cell.Specs.model_fields))
        if unknown:
            raise TransformerError(
                f"{where}: transform() returned {unknown}, which {cell.full_name}'s Specs lack; "
                f"its fields: {', '.join(sorted(cell.Specs.model_fields)) or '(none)'}"
            )
        return {**specs.__dict__, **changed}


_REGISTERED: weakref.WeakKeyDictionary[Project, dict[str, type[Transformer]]] = (
    weakref.WeakKeyDictionary()
)  # by Project object: a project redefined under its name starts with none


def _path(cls: type[Any]) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def registered_transformers(project: Project) -> Mapping[str, type[Transformer]]:
    """The transformers declared with `project=project`, by name."""
    return _REGISTERED.get(project, {})


def find_transformer(name: str, project: Project, where: str) -> type[Transformer]:
    """The transformer class `name` names: one registered on `project` (or on another version
    of it), or "module:Class".

    Raises:
        TransformerError: no such transformer (the message lists `project`'s), or the import
            fails, or what it names is no Transformer subclass.
    """
    if ":" in name:
        module_name, _, qualname = name.partition(":")
        try:
            found: Any = importlib.import_module(module_name)
            for part in qualname.split("."):
                found = getattr(found, part)
        except (ImportError, AttributeError) as exc:
            raise TransformerError(
                f"{where} = {name!r}: cannot import it ({type(exc).__name__}: {exc}); give "
                "'package.module:ClassName' or the name of a transformer registered on the "
                "project"
            ) from None
        if not (isinstance(found, type) and issubclass(found, Transformer)):
            raise TransformerError(f"{where} = {name!r} is {found!r}, not a Transformer subclass")
        return found
    registered = registered_transformers(project)
    if name in registered:
        return registered[name]
    # another version of the project: the current one first, then the highest archived
    others = [p for p, by in _REGISTERED.items() if p.name == project.name and name in by]
    if others:
        best = max(others, key=lambda p: (not p.archived, p.parsed_version))
        return _REGISTERED[best][name]
    raise TransformerError(
        f"{where} = {name!r}: project {project.name!r} has no transformer {name!r}; its "
        f"transformers: {', '.join(sorted(registered)) or '(none)'}. Register one with "
        f"`class {name}(Transformer, project=...)`, or give an importable 'module:Class'"
    )


def transform(
    transformers: Mapping[str, Transformer], path: str, cell: type[Cell], specs: Specs
) -> tuple[Specs, tuple[dict[str, Any], ...]]:
    """`cell`'s Specs at `path` after the call's transformer there (if any), and its record."""
    transformer = transformers.get(path)
    if transformer is None:
        return specs, ()
    values = transformer.apply(path, cell, specs)
    return build_model(cell.Specs, values, where=cell.full_name), (transformer.record(path),)


def transformer_tree(
    graph: DefinitionGraph,
    root: type[Cell],
    addressed: Mapping[str, Mapping[str, Any]] | None,
    transformers: Mapping[str, Any] | None,
) -> tuple[AddressNode | None, dict[str, Transformer]]:
    """The address tree of a call's `addressed=` values and `transformers=` paths together
    (one node per path), and its transformers by path.

    Raises:
        AddressError: a transformer's path names an edge that does not exist (the message
            lists the edges there), as for addressed values.
        TransformerError: a value is not a Transformer.
    """
    if not transformers:
        return address_tree(graph, root, addressed), {}
    found = {path.strip("/"): transformer_of(path, given) for path, given in transformers.items()}
    try:
        address_tree(graph, root, {path: {} for path in transformers})
    except AddressError as exc:
        raise AddressError(f"transformers=: {exc}") from None
    paths = {**{path: {} for path in found}, **(addressed or {})}
    return address_tree(graph, root, paths), found


def transformer_of(path: str, given: Any) -> Transformer:
    """A `transformers=` value as a Transformer instance (a class is instantiated with its
    default Specs).

    Raises:
        TransformerError: neither a Transformer subclass nor an instance of one.
    """
    if isinstance(given, type) and issubclass(given, Transformer):
        return given()
    if isinstance(given, Transformer):
        return given
    raise TransformerError(
        f"transformers[{path!r}] = {given!r}: give a Transformer subclass or an instance of one"
    )


__all__ = [
    "PREVIOUS_EDGE",
    "IncrementCounter",
    "IncrementingCell",
    "Increments",
    "Transformer",
    "edge_values",
    "find_transformer",
    "increment_key",
    "registered_transformers",
    "stuck",
    "switch_on",
    "transform",
    "transformer_of",
    "transformer_tree",
    "unroll_limit",
]
