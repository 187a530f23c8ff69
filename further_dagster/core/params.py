"""Parameter models (Specs, Opts), the VAR marker, and validation with errors that say how to fix.

Specs are identity: every field, defaults included, enters the logic key. Opts are operational
(verbosity, output format, thread counts): they never enter a key, so changing them never
recomputes anything.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from further_dagster.errors import SpecsValidationError


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


def expand(values: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Cartesian expansion of a mapping whose values may be VARs, in declaration order."""
    combos: list[dict[str, Any]] = [{}]
    for name, value in values.items():
        options = value.values if isinstance(value, VAR) else (value,)
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
