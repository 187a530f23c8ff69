"""The one rule for names that become store directories, and the contribution names reserved.

Project, cell, req_cells edge and contribution names end up as directory and file names under
the store root, so core checks them when a class is defined and the store checks them again
before it builds a path, both with `check_identifier`. A name must match the whole of
`[A-Za-z_][A-Za-z0-9_]*`; `re.fullmatch` is used because `re.match(r"^...$")` also accepts a
trailing newline (`"abc\\n"`), which would pass at definition time and fail only when the store
first tried to write.
"""

from __future__ import annotations

import re
from typing import TypeGuard

from further_dagster.errors import InvalidNameError

IDENTIFIER_PATTERN = "[A-Za-z_][A-Za-z0-9_]*"
_IDENTIFIER = re.compile(IDENTIFIER_PATTERN)

RESULT_ATTRIBUTE_NAMES = frozenset({"key", "specs", "cell", "increment", "to_dict", "get"})
"""Attributes of a loaded result (`Contributions`) that a contribution would shadow."""

STORE_RECORD_NAMES = frozenset({"manifest", "provenance"})
"""Record files the store writes inside `result/` (`<name>.json`): a contribution of the same
name would collide with them. The store refuses these; cells refuse every reserved name."""

RESERVED_CONTRIBUTION_NAMES = RESULT_ATTRIBUTE_NAMES | STORE_RECORD_NAMES
"""Names a cell may not give a contribution (checked when the cell class is defined)."""


def is_identifier(value: object) -> TypeGuard[str]:
    """True if `value` is a str that is a plain identifier (the whole of it, no newline)."""
    return isinstance(value, str) and _IDENTIFIER.fullmatch(value) is not None


def check_identifier(kind: str, name: object, *, fix: str = "") -> str:
    """Return `name` if it is a plain identifier, else raise `InvalidNameError`.

    Args:
        kind: what the name names ("project", "cell", "contribution", ...), for the message.
        name: the value to check; anything but a str is refused.
        fix: a sentence saying how to fix it, appended to the message.

    Returns:
        `name`, unchanged.

    Raises:
        InvalidNameError: naming the kind, the value given and the allowed form.
    """
    if not is_identifier(name):
        raise InvalidNameError(
            f"{kind} name {name!r} is not a plain identifier: names must match "
            f"{IDENTIFIER_PATTERN} in full (letters, digits and underscores, not starting with a "
            "digit), because they become store directories and must not escape the store root. "
            + (fix or f"Rename the {kind}.")
        )
    return name


__all__ = [
    "IDENTIFIER_PATTERN",
    "RESERVED_CONTRIBUTION_NAMES",
    "RESULT_ATTRIBUTE_NAMES",
    "STORE_RECORD_NAMES",
    "check_identifier",
    "is_identifier",
]
