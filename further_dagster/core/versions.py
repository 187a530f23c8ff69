"""Versions that coexist: a cell's `api_version` and a project's `version` are PEP 440 versions;
older implementations stay in the code as archived classes (or projects), and callers pin
ranges (`Req("fit", version=">=1.2,<2.0")`, `Project(..., calls={"lib": ">=1,<2"})`).

The default version of a name is its current one (not archived; at most one per name), else the
highest archived one. A pin picks the highest version its range allows.

Addresses name a version exactly: `project[@version].cell[@api_version]`, e.g. `"lib.fit"`,
`"lib.fit@1.4"`, `"lib@1.4.fit"` (the cell `fit` of the archived project lib 1.4) and
`"lib@1.4.fit@1.2"`. The cell name is the last dotted part that is an identifier, so a project
version may itself contain dots (`lib@1.0.post1.fit`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import NamedTuple, TypeVar

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import canonicalize_version
from packaging.version import InvalidVersion, Version

from further_dagster.errors import VersionError

DEFAULT_VERSION = "1"
"""An `api_version` left at this value stays out of logic keys (the keys of before versions)."""

_DEFAULT = Version(DEFAULT_VERSION)

T = TypeVar("T")

_ADDRESS = re.compile(
    r"(?:(?P<project>[A-Za-z_][A-Za-z0-9_]*)(?:@(?P<project_version>[^@]+?))?\.)?"
    r"(?P<cell>[A-Za-z_][A-Za-z0-9_]*)(?:@(?P<cell_version>[^@]+))?"
)


class Address(NamedTuple):
    """A parsed cell address; a version part is None when the address leaves it to the default."""

    project: str | None
    project_version: str | None
    cell: str
    cell_version: str | None


def split_address(ref: str) -> Address | None:
    """`ref` split as `project[@version].cell[@api_version]`, or None if it has another form."""
    found = _ADDRESS.fullmatch(ref)
    if found is None:
        return None
    return Address(found["project"], found["project_version"], found["cell"], found["cell_version"])


def key_version(version: Version) -> str | None:
    """A project version as it enters its cells' logic keys: None (left out) when it equals 1.

    PEP 440 equality, not the text, decides: before projects had coexisting versions their
    `version` was informational and `"1.0"` a common spelling of the default, so the keys of
    such projects must stay those of before. Any other version enters in its canonical form,
    so `"2"` and `"2.0"`, one version to the registry, are one key too.
    """
    return None if version == _DEFAULT else canonicalize_version(version)


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
    versions: Mapping[Version, T],
    wanted: str | None,
    *,
    what: str,
    caller: str,
    keep: str = "an archived class: `class FitV1(Cell, project=p, name='fit', archived=True)`",
) -> tuple[Version, T]:
    """The highest of `versions` that `wanted` allows (pre-releases only if named); `keep`
    says how to keep a missing version in the code.

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
            f"({keep})."
        )
    best = max(allowed)
    return best, versions[best]


__all__ = [
    "DEFAULT_VERSION",
    "Address",
    "key_version",
    "parse_range",
    "parse_version",
    "pick",
    "split_address",
]
