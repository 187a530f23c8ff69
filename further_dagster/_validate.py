"""Parsing and validation of `FURTHER_*` values for settings.py: every refusal is a
`ConfigurationError` naming the variable (or argument), the value and what is allowed."""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Mapping
from pathlib import Path
from typing import NoReturn

from further_dagster.errors import ConfigurationError

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def flag(name: str, environ: Mapping[str, str] | None, meaning: str, default: bool = False) -> bool:
    """A boolean variable: unset or empty is `default`; 1/true/yes/on or 0/false/no/off."""
    raw = environ_of(environ).get(name)
    if not raw:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    refuse(
        name,
        repr(raw),
        f"it must be 1, true, yes or on ({meaning}) or 0, false, no or off",
        f"Unset it for the default, {int(default)}.",
    )


def environ_of(environ: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if environ is None else environ


def seconds(
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
            refuse(argument, repr(explicit), allowed)
        value = float(explicit)
        if not (math.isfinite(value) and value >= minimum):
            refuse(argument, repr(explicit), allowed)
        return value
    raw = environ_of(environ).get(variable)
    if not raw:
        return default
    hint = f"Unset it for the default, {default:g}."
    try:
        value = float(raw)
    except ValueError:
        refuse(variable, repr(raw), allowed, hint)
    if not (math.isfinite(value) and value >= minimum):
        refuse(variable, repr(raw), allowed, hint)
    return value


def first_non_directory(path: Path) -> Path | None:
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


def refuse(name: str, given: str, allowed: str, hint: str = "") -> NoReturn:
    raise ConfigurationError(
        f"{name}={given} is not allowed: {allowed}." + (f" {hint}" if hint else "")
    )


def positive_int(
    explicit: int | None,
    argument: str,
    variable: str,
    environ: Mapping[str, str] | None,
    *,
    default: int,
    why: str,
) -> int:
    """An integer >= 1: `explicit` (the argument `argument`), else `variable`, else `default`."""
    allowed = f"it must be an integer >= 1 ({why})"
    if explicit is not None:
        if isinstance(explicit, bool) or not isinstance(explicit, numbers.Integral):
            refuse(argument, repr(explicit), allowed)
        if int(explicit) < 1:
            refuse(argument, repr(explicit), allowed)
        return int(explicit)
    raw = environ_of(environ).get(variable)
    if not raw:
        return default
    hint = f"Unset it for the default, {default}."
    try:
        value = int(raw.strip(), 10)
    except ValueError:
        refuse(variable, repr(raw), allowed, hint)
    if value < 1:
        refuse(variable, repr(raw), allowed, hint)
    return value
