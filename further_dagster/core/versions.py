"""Versions that coexist: a cell's `api_version` and a project's `version` are PEP 440 versions;
older implementations stay in the code as archived classes (or projects), and callers pin
ranges (`Req("fit", version=">=1.2,<2.0")`, `Project(..., calls={"lib": ">=1,<2"})`).

The default version of a name is its current one (not archived; at most one per name), else the
highest archived one. A pin picks the highest version its range allows.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from further_dagster.errors import VersionError

DEFAULT_VERSION = "1"
"""An `api_version` left at this value stays out of logic keys (the keys of before versions)."""

T = TypeVar("T")


def parse_version(value: object, *, where: str) -> Version:
    """`value` (e.g. 1, "1.4", "2.0rc1") as a PEP 440 Version.

    Raises:
        VersionError: not a PEP 440 version.
    """
    try:
        return Version(str(value))
    except InvalidVersion:
        raise VersionError(
            f"{where}: version {value!r} is not a PEP 440 version; write e.g. '1.4' or '2.0'"
        ) from None


def parse_range(value: str, *, where: str) -> SpecifierSet:
    """A version range such as ">=1.2,<2.0" (a bare "1.4" means "==1.4").

    Raises:
        VersionError: not a PEP 440 specifier.
    """
    text = value.strip()
    if text and text[0].isdigit():
        text = f"=={text}"
    try:
        return SpecifierSet(text)
    except InvalidSpecifier:
        raise VersionError(
            f"{where}: version range {value!r} is not a PEP 440 specifier; write e.g. "
            "'>=1.2,<2.0' or '1.4'"
        ) from None


def pick(
    versions: Mapping[Version, T], wanted: str | None, *, what: str, caller: str
) -> tuple[Version, T]:
    """The highest of `versions` that `wanted` allows (pre-releases only if named).

    Raises:
        VersionError: no version satisfies the range; the message names caller, target and
            the available versions.
    """
    spec = parse_range(wanted, where=caller) if wanted is not None else None
    allowed = [v for v in versions if spec is None or spec.contains(v, prereleases=True)]
    if not allowed:
        available = ", ".join(str(v) for v in sorted(versions)) or "(none)"
        raise VersionError(
            f"{caller} pins {what} to {wanted!r}, which no version satisfies; available "
            f"versions: {available}. Widen the pin, or keep the version it needs in the code "
            "(an archived class: `class FitV1(Cell, project=p, name='fit', archived=True)`)."
        )
    best = max(allowed)
    return best, versions[best]


__all__ = ["DEFAULT_VERSION", "parse_range", "parse_version", "pick"]
