"""Validated Specs and Opts models, shared when the values repeat (core/instances.py).

The instances of a sweep repeat few distinct Specs: a million instances of a grid's last level
may hold a hundred distinct values of their own field. Validating (pydantic) and keeping a
million equal models costs seconds and hundreds of MiB, so one resolver validates each distinct
set of values once and shares the (frozen) model, and encodes each shared Specs once for the
logic keys (`keys.logic_key(..., encoded_specs=...)`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from further_dagster.core.hashing import encode, plain_token
from further_dagster.core.params import M, Specs, build_model

_DEFAULT_MODELS: dict[type[Any], Any] = {}


def defaults(model: type[M], where: str, values: Mapping[str, Any], what: str) -> M:
    """Validate `values` into `model`; the all-defaults model (frozen) is built only once."""
    if values:
        return build_model(model, values, where=where, what=what)
    found: M | None = _DEFAULT_MODELS.get(model)
    if found is None:
        found = _DEFAULT_MODELS[model] = build_model(model, {}, where=where, what=what)
    return found


class Validated:
    """The models one resolver validated, by (model, values): values that are not plain data
    (core/hashing.py `plain_token`) are validated every time, as a validator may tell them
    apart in ways an encoding does not."""

    __slots__ = ("_models", "_encoded")

    def __init__(self) -> None:
        self._models: dict[tuple[type[Any], bytes], Any] = {}
        # id -> (the Specs, kept alive so that its id is never reused; its encoding)
        self._encoded: dict[int, tuple[Specs, bytes]] = {}

    def model(
        self,
        model: type[M],
        where: str,
        values: Mapping[str, Any],
        what: str,
        token: bytes | None = None,
    ) -> M:
        """`defaults(model, where, values, what)`, shared with every earlier equal call.
        `token`: `plain_token(values)` when the caller has it."""
        if not values:
            return defaults(model, where, values, what)
        if token is None:
            token = plain_token(values if type(values) is dict else dict(values))
        if token is None:
            return build_model(model, values, where=where, what=what)
        slot = (model, token)
        found: M | None = self._models.get(slot)
        if found is None:
            found = self._models[slot] = build_model(model, values, where=where, what=what)
        return found

    def encoded(self, specs: Specs) -> bytes:
        """`encode(specs.__dict__)`, the `specs` entry of a logic key, once per model."""
        found = self._encoded.get(id(specs))
        if found is None or found[0] is not specs:
            found = self._encoded[id(specs)] = (specs, encode(specs.__dict__))
        return found[1]


__all__ = ["Validated", "defaults"]
