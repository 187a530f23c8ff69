"""Parameter models (Specs, Opts), the parameter kinds, and validation errors that say how to fix.

Kinds (the Further seed, "The Parameter System"): a plain value or `CONST(v)` is fixed;
`VAR([...])` sweeps; `DYN` and `STUB` on a req_cells edge mean the caller computes the value
inside make() and dispatches with `self.call(edge, field=value)`; `RAND(...)` draws a fresh
value per execution; `ITER(delta)` on a req_cells edge with a call switch passes the caller's own
value plus `delta` (a statically unrolled loop, core/iterative.py).

Specs are identity: every field, defaults included, enters the logic key. Opts are operational
(verbosity, output format, thread counts): they never enter a key, so changing them never
recomputes anything.
"""

from __future__ import annotations

import itertools
import random
import threading
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from further_dagster.errors import ParameterKindError, SpecsValidationError


class Specs(BaseModel):
    """Identity parameters of a cell. Subclass it inside a cell as `class Specs(Specs): ...`."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Opts(BaseModel):
    """Operational parameters of a cell; never part of its logic key."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ProjectParams(BaseModel):
    """Project-level parameters that cells subscribe to with `project_params = ("name", ...)`."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class VAR:
    """A list of values, each of which spawns its own instance (a sweep).

    `VAR([0.1, 0.01])` at a session call or on a req_cells edge expands into the Cartesian
    product with every other VAR of the same call or edge.
    """

    __slots__ = ("values",)

    def __init__(self, values: Iterable[Any]) -> None:
        if isinstance(values, (str, bytes, Mapping)):
            raise TypeError(f"VAR needs a list of values, got {type(values).__name__} {values!r}")
        self.values: tuple[Any, ...] = tuple(values)
        if not self.values:
            raise ValueError("VAR needs at least one value; an empty sweep would produce nothing")

    def __repr__(self) -> str:
        return f"VAR({list(self.values)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, VAR) and other.values == self.values

    def __hash__(self) -> int:
        return hash(("VAR", self.values))


class CONST:
    """An explicit constant: `CONST(v)` is the same as writing `v` (documents intent)."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        if isinstance(value, (VAR, CONST, _Runtime, RAND, ITER)):
            raise ParameterKindError(f"CONST({value!r}): a CONST holds a plain value")
        self.value = value

    def __repr__(self) -> str:
        return f"CONST({self.value!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CONST) and other.value == self.value

    def __hash__(self) -> int:
        return hash(("CONST", repr(self.value)))


class _Runtime:
    """The DYN and STUB markers: a value the calling cell computes inside make()."""

    __slots__ = ("kind",)

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def __repr__(self) -> str:
        return self.kind

    def __reduce__(self) -> str:
        return self.kind  # unpickles as the module-level singleton


DYN = _Runtime("DYN")
"""`Req("fit", alpha=DYN)`: the caller computes `alpha` in make() and calls
`self.call("fit", alpha=value)`; the caller's key does not depend on the value."""

STUB = _Runtime("STUB")
"""Like DYN, marked temporary: plans list STUB edges ("move to VAR/CONST once the values are
known")."""


class RAND:
    """A fresh random value per execution.

    `RAND()` draws an int in [0, 2**31 - 1]; `RAND(low, high)` an int in [low, high] when both
    are ints, else a float in [low, high). On a req_cells edge the value is drawn when the caller
    actually runs (recorded in its provenance; the child is keyed by the drawn value; a cached
    caller keeps its earlier draws); at a session call it is drawn anew per call. `seed=` makes
    the draws reproducible (tests): each draw is then a function of the seed and of what draws
    (the caller's key and edge, or the count of session-level draws).

    Raises:
        ParameterKindError: the range is empty (low > high, or low == high for floats).
    """

    __slots__ = ("low", "high", "seed", "_count", "_lock")

    def __init__(
        self, low: int | float = 0, high: int | float = 2**31 - 1, *, seed: int | None = None
    ) -> None:
        for name, bound in (("low", low), ("high", high)):
            if isinstance(bound, bool) or not isinstance(bound, (int, float)):
                raise ParameterKindError(f"RAND({low!r}, {high!r}): {name} must be a number")
        integral = isinstance(low, int) and isinstance(high, int)
        if low > high or (not integral and low == high):
            raise ParameterKindError(
                f"RAND({low!r}, {high!r}) is an empty range: give low < high "
                "(or low <= high for integers)"
            )
        self.low, self.high, self.seed = low, high, seed
        self._count = itertools.count()
        self._lock = threading.Lock()

    def draw(self, context: str | None = None) -> int | float:
        """One value. `context` (e.g. caller key and edge) makes a seeded draw depend on it; a
        seeded draw without context advances this RAND's own counter."""
        if self.seed is None:
            gen: random.Random = random.SystemRandom()
        else:
            if context is None:
                with self._lock:
                    context = f"#{next(self._count)}"
            gen = random.Random(f"{self.seed}:{context}")
        if isinstance(self.low, int) and isinstance(self.high, int):
            return gen.randint(self.low, self.high)
        return gen.uniform(self.low, self.high)

    def __repr__(self) -> str:
        seed = f", seed={self.seed!r}" if self.seed is not None else ""
        return f"RAND({self.low!r}, {self.high!r}{seed})"

    def __getstate__(self) -> tuple[Any, ...]:
        return (self.low, self.high, self.seed)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        self.low, self.high, self.seed = state
        self._count = itertools.count()
        self._lock = threading.Lock()


class ITER:
    """`Req("refine", iteration=ITER(-1), switch=lambda s: s.iteration > 0)`: the child's
    `iteration` is the caller's own `iteration` plus `delta`, so a cell may require itself (or
    a loop of cells) and the loop is unrolled when the call is resolved, each step its own
    memoized instance. An ITER edge with a non-zero delta needs a `switch`, which turns it off
    at the stopping point; `ITER(0)` passes the caller's value on unchanged (the other edges of
    a loop of cells: the same round) and needs none.

    Raises:
        ParameterKindError: `delta` is not a number.
    """

    __slots__ = ("delta",)

    def __init__(self, delta: int | float = -1) -> None:
        if isinstance(delta, bool) or not isinstance(delta, (int, float)):
            raise ParameterKindError(
                f"ITER({delta!r}): give a number, the step from the caller's value "
                "(ITER(-1): the previous iteration; ITER(0): the same one)"
            )
        self.delta = delta

    def __repr__(self) -> str:
        return f"ITER({self.delta!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ITER) and other.delta == self.delta

    def __hash__(self) -> int:
        return hash(("ITER", self.delta))


RUNTIME_KINDS = ("DYN", "STUB", "RAND")


def runtime_kind(value: Any) -> str | None:
    """The kind ("DYN", "STUB" or "RAND") of a runtime-resolved marker, else None."""
    if isinstance(value, _Runtime):
        return value.kind
    if isinstance(value, RAND):
        return "RAND"
    return None


def plain(value: Any) -> Any:
    """`CONST(v)` -> v; anything else unchanged."""
    return value.value if isinstance(value, CONST) else value


def expand(values: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Cartesian expansion of a mapping whose values may be VARs, in declaration order."""
    combos: list[dict[str, Any]] = [{}]
    for name, value in values.items():
        options = value.values if isinstance(value, VAR) else (plain(value),)
        combos = [{**combo, name: option} for combo in combos for option in options]
    return combos


def has_var(values: Mapping[str, Any]) -> bool:
    return any(isinstance(v, VAR) for v in values.values())


M = TypeVar("M", bound=BaseModel)


def build_model(model: type[M], values: Mapping[str, Any], *, where: str, what: str = "Specs") -> M:
    """Validate `values` into `model`, turning pydantic's error into one that names the cell."""
    try:
        return model(**values)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"]) or "<model>"
            given = err.get("input", "<missing>")
            if err["type"] == "extra_forbidden":
                valid = ", ".join(sorted(model.model_fields)) or "(none)"
                lines.append(f"  {field}: unknown field (given {given!r}); valid fields: {valid}")
            elif err["type"] == "missing":
                lines.append(f"  {field}: required and not given")
            else:
                lines.append(f"  {field}: {err['msg']} (given {given!r})")
        raise SpecsValidationError(
            f"{what} of {where} are invalid:\n"
            + "\n".join(lines)
            + f"\nFix the value passed for {where} (session call, req_cells edge, project params"
            " or project_inits), or the default in its Specs model."
        ) from None
