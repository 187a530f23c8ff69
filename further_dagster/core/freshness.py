"""Freshness policies: which release of a resource cell a call uses.

A policy is an instruction, never identity: only the release it resolves to enters a logic key,
so two callers with different policies that land on the same release share one stored result.

Each policy is a small frozen value with a pure choice in two steps, so it can be tested with a
hand-made history and clock:

1. `choose(history, now, where=...)` -> a release to use without calling `get_release()`, or
   None to ask `get_release()`;
2. `accept(current, history, now, where=...)` -> given what `get_release()` answered, the
   release to use, or a `ReleaseError` naming the cell and the fix.

`history` is what the engine knows about one resource instance: every observed release with the
time it was observed, and which releases have a stored result.

Compact string forms (run tags, CLI, project_inits): `latest`, `current:3600`, `present`,
`release:<pin>`, `date_range:<iso>..<iso>`; `parse_freshness` reads them and `str(policy)`
writes them.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from further_dagster.core.versions import split_address
from further_dagster.errors import ReleaseError

if TYPE_CHECKING:
    from further_dagster.core.cell import Cell

UTC = dt.UTC


@dataclass(frozen=True, slots=True)
class Observation:
    """One answer of `get_release()`: the release and when it was observed (aware, UTC)."""

    release: str
    observed_at: dt.datetime


@dataclass(frozen=True, slots=True)
class History:
    """What is known about one resource instance: observations (oldest first) and the releases
    that have a stored result."""

    observations: tuple[Observation, ...] = ()
    stored: frozenset[str] = frozenset()

    def latest(self) -> Observation | None:
        """The most recent observation."""
        return max(self.observations, key=lambda o: o.observed_at, default=None)

    def newest_stored(self, within: tuple[dt.datetime, dt.datetime] | None = None) -> str | None:
        """The stored release observed most recently (optionally only observations in a window)."""
        best: Observation | None = None
        for obs in self.observations:
            if obs.release not in self.stored:
                continue
            if within is not None and not within[0] <= obs.observed_at <= within[1]:
                continue
            if best is None or obs.observed_at >= best.observed_at:
                best = obs
        return best.release if best is not None else None

    def describe(self, limit: int = 5) -> str:
        """`'r2' (stored, observed 2024-05-01T10:00:00+00:00), ...`, newest first."""
        last: dict[str, dt.datetime] = {}
        for obs in self.observations:
            if obs.release not in last or obs.observed_at > last[obs.release]:
                last[obs.release] = obs.observed_at
        for release in self.stored - set(last):
            last[release] = dt.datetime.min.replace(tzinfo=UTC)
        if not last:
            return "none observed yet"
        ordered = sorted(last.items(), key=lambda kv: kv[1], reverse=True)
        parts = []
        for release, when in ordered[:limit]:
            state = "stored" if release in self.stored else "not stored"
            seen = "" if when.year == 1 else f", last observed {when.isoformat()}"
            parts.append(f"{release!r} ({state}{seen})")
        more = f" and {len(ordered) - limit} more" if len(ordered) > limit else ""
        return ", ".join(parts) + more


class Freshness:
    """Base class of the freshness policies; see `latest`, `current`, `present`, `release` and
    `date_range`."""

    __slots__ = ()

    #: False when `choose` never looks at the history (the engine then skips reading it).
    needs_history: bool = True

    def choose(self, history: History, now: dt.datetime, *, where: str) -> str | None:
        """The release to use without calling get_release(), or None to call it."""
        return None

    def accept(self, current: str, history: History, now: dt.datetime, *, where: str) -> str:
        """The release to use once get_release() answered `current`."""
        return current

    def pins(self) -> tuple[str, ...]:
        """Releases whose stored state the engine must check even if never observed."""
        return ()


@dataclass(frozen=True, slots=True)
class Latest(Freshness):
    """Always ask get_release(): the most recent release. For live dashboards."""

    needs_history = False

    def __str__(self) -> str:
        return "latest"

    def __repr__(self) -> str:
        return "latest()"


@dataclass(frozen=True, slots=True)
class Current(Freshness):
    """Reuse the last observed release, without calling get_release(), if it was observed within
    `shelf_life` and its result is stored; otherwise ask get_release(). For periodic batches."""

    shelf_life: dt.timedelta

    def choose(self, history: History, now: dt.datetime, *, where: str) -> str | None:
        last = history.latest()
        if last is None or last.release not in history.stored:
            return None
        if now - last.observed_at <= self.shelf_life:
            return last.release
        return None

    def __str__(self) -> str:
        return f"current:{self.shelf_life.total_seconds():g}"

    def __repr__(self) -> str:
        return f"current({self.shelf_life.total_seconds():g})"


@dataclass(frozen=True, slots=True)
class Present(Freshness):
    """Any stored release, newest observation first, with no expiry; get_release() is asked
    only when nothing is stored yet. For historical studies."""

    def choose(self, history: History, now: dt.datetime, *, where: str) -> str | None:
        return history.newest_stored()

    def __str__(self) -> str:
        return "present"

    def __repr__(self) -> str:
        return "present()"


@dataclass(frozen=True, slots=True)
class Release(Freshness):
    """Exactly the release `pin`: stored, or current (then computed). For publications."""

    pin: str

    def choose(self, history: History, now: dt.datetime, *, where: str) -> str | None:
        return self.pin if self.pin in history.stored else None

    def accept(self, current: str, history: History, now: dt.datetime, *, where: str) -> str:
        if current == self.pin:
            return current
        raise ReleaseError(
            f"{where}: release {self.pin!r} is neither stored nor current (get_release() now "
            f"returns {current!r}). Known releases: {history.describe()}. Pin one of the stored "
            f"releases, or use latest() / present() instead of release({self.pin!r})."
        )

    def pins(self) -> tuple[str, ...]:
        return (self.pin,)

    def __str__(self) -> str:
        return f"release:{self.pin}"

    def __repr__(self) -> str:
        return f"release({self.pin!r})"


@dataclass(frozen=True, slots=True)
class DateRange(Freshness):
    """A stored release observed within [start, end] (the newest such); if none is stored, the
    current release when it was observed in the window (or the window includes now). For
    quarterly reports and "the data as it was on a given date"."""

    start: dt.datetime
    end: dt.datetime

    def choose(self, history: History, now: dt.datetime, *, where: str) -> str | None:
        return history.newest_stored(within=(self.start, self.end))

    def accept(self, current: str, history: History, now: dt.datetime, *, where: str) -> str:
        if self.start <= now <= self.end:
            return current
        if any(
            o.release == current and self.start <= o.observed_at <= self.end
            for o in history.observations
        ):
            return current
        raise ReleaseError(
            f"{where}: no release observed between {self.start.isoformat()} and "
            f"{self.end.isoformat()} is stored, and the current release {current!r} was not "
            f"observed in that window. Known releases: {history.describe()}. Widen the date "
            f"range, or use present() / release(pin) for one of the known releases."
        )

    def __str__(self) -> str:
        return f"date_range:{self.start.isoformat()}..{self.end.isoformat()}"

    def __repr__(self) -> str:
        return f"date_range({self.start.isoformat()!r}, {self.end.isoformat()!r})"


# --- constructors --------------------------------------------------------------------------


def latest() -> Latest:
    """Always call get_release(): use the most recent release."""
    return Latest()


def _shelf_life(value: Any, where: str) -> dt.timedelta:
    if isinstance(value, dt.timedelta):
        life = value
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        life = dt.timedelta(seconds=value) if value == value else dt.timedelta(0)  # NaN -> bad
    else:
        life = None
    if life is None or life <= dt.timedelta(0):
        raise ReleaseError(
            f"current(shelf_life={value!r}){where}: a shelf life must be a positive duration; "
            "pass seconds or a timedelta, e.g. current(3600) or current(timedelta(hours=1))."
        )
    return life


def current(shelf_life: dt.timedelta | float) -> Current:
    """Reuse the last observed release if observed within `shelf_life` (a timedelta or seconds,
    positive) and stored; otherwise call get_release()."""
    return Current(_shelf_life(shelf_life, ""))


def present() -> Present:
    """Any stored release (newest first, no expiry); get_release() only if none is stored."""
    return Present()


def release(pin: str) -> Release:
    """Exactly the release `pin` (a stored one, or the current one)."""
    if not isinstance(pin, str) or not pin:
        raise ReleaseError(
            f"release(pin={pin!r}): a pin is a non-empty release string, as "
            "recorded in provenance (Session.releases(result)) or shown in Dagster metadata."
        )
    return Release(pin)


def _instant(value: Any, *, end: bool, where: str) -> dt.datetime:
    """A datetime (naive = UTC), a date (start of day; for `end`, end of day) or ISO text."""
    if isinstance(value, str):
        text = value.strip()
        try:
            if len(text) == 10:
                value = dt.date.fromisoformat(text)
            else:
                value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise ReleaseError(
                f"date_range{where}: {value!r} is not an ISO date or datetime; write e.g. "
                "'2024-01-31' or '2024-01-31T12:00:00+00:00'."
            ) from None
    if isinstance(value, dt.datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, dt.date):
        day = dt.datetime(value.year, value.month, value.day, tzinfo=UTC)
        return day + dt.timedelta(days=1) - dt.timedelta(microseconds=1) if end else day
    raise ReleaseError(
        f"date_range{where}: {value!r} is not a date; pass a datetime, a date or ISO text."
    )


def date_range(start: dt.datetime | dt.date | str, end: dt.datetime | dt.date | str) -> DateRange:
    """A stored release observed between `start` and `end` (inclusive; a date `end` covers that
    whole day; naive datetimes are UTC)."""
    lo, hi = _instant(start, end=False, where=""), _instant(end, end=True, where="")
    if lo > hi:
        raise ReleaseError(
            f"date_range({start!r}, {end!r}): the start is after the end; swap them."
        )
    return DateRange(lo, hi)


# --- compact strings and call-time overrides ----------------------------------------------

FORMS = "latest, current:<seconds>, present, release:<pin>, date_range:<iso>..<iso>"


def parse_freshness(text: str, *, where: str = "freshness") -> Freshness:
    """Parse the compact form (`latest`, `current:3600`, `present`, `release:<pin>`,
    `date_range:<iso>..<iso>`)."""
    if not isinstance(text, str):
        raise ReleaseError(f"{where}: expected a policy string ({FORMS}), got {text!r}")
    name, sep, arg = text.strip().partition(":")
    name = name.strip().lower()
    if name in ("latest", "present") and not sep:
        return Latest() if name == "latest" else Present()
    if name == "current" and sep:
        try:
            seconds = float(arg)
        except ValueError:
            seconds = float("nan")
        return Current(_shelf_life(seconds if seconds == seconds else arg, f" ({where})"))
    if name == "release" and sep and arg:
        return Release(text.strip().partition(":")[2])
    if name == "date_range" and ".." in arg:
        lo, _, hi = arg.partition("..")
        w = f" ({where})"
        start, end = _instant(lo, end=False, where=w), _instant(hi, end=True, where=w)
        if start > end:
            raise ReleaseError(f"{where}: date_range {text!r} starts after it ends; swap them.")
        return DateRange(start, end)
    raise ReleaseError(f"{where}: cannot read the freshness policy {text!r}; valid forms: {FORMS}.")


def as_freshness(value: Any, *, where: str) -> Freshness:
    """A policy object, or its compact string form."""
    if isinstance(value, Freshness):
        return value
    if isinstance(value, str):
        return parse_freshness(value, where=where)
    raise ReleaseError(
        f"{where}: {value!r} is not a freshness policy; use latest(), current(seconds), "
        f"present(), release(pin), date_range(start, end), or a string ({FORMS})."
    )


ALL = "*"


@dataclass(frozen=True)
class FreshnessOverrides:
    """Call-time policies that override the cells' own: one for everything (`default`), per
    project (its name: every version of it; "lib@1.4": that version) and per cell
    ("project.cell", "lib@1.4.cell"); the most specific wins."""

    default: Freshness | None = None
    by_scope: Mapping[str, Freshness] = field(default_factory=dict)

    def policy_for(self, cell: type[Cell]) -> Freshness:
        """The policy that applies to resource cell `cell` under these overrides."""
        project = cell.project
        found = (
            self.by_scope.get(cell.full_name)
            or self.by_scope.get(getattr(project, "address", project.name))
            or self.by_scope.get(project.name)
        )
        if found is not None:
            return found
        if self.default is not None:
            return self.default
        own: Freshness = getattr(cell, "freshness", None) or Latest()
        return own

    def __bool__(self) -> bool:
        return self.default is not None or bool(self.by_scope)

    def merged(self, over: FreshnessOverrides) -> FreshnessOverrides:
        """These overrides, with `over` taking precedence (a global `over` replaces all)."""
        if over.default is not None:
            return over
        return FreshnessOverrides(self.default, {**self.by_scope, **over.by_scope})

    def to_text(self) -> str:
        """The compact form `normalize_freshness` reads back (for run tags and run config)."""
        if not self.by_scope and self.default is not None:
            return str(self.default)
        scopes = {ALL: str(self.default)} if self.default is not None else {}
        scopes.update({k: str(v) for k, v in sorted(self.by_scope.items())})
        return json.dumps(scopes, sort_keys=True)

    def check(self, known: Iterable[type[Cell]], *, where: str = "freshness") -> None:
        """Every scope names a known project or a known resource cell."""
        cells = list(known)
        projects = {c.project.name for c in cells}
        projects |= {getattr(c.project, "address", c.project.name) for c in cells}
        resources = {c.full_name: c for c in cells if c.is_resource}
        for scope in self.by_scope:
            address = split_address(scope)  # "lib@1.4" is a project, "lib@1.4.src" a cell
            if scope in projects:
                continue
            if address is not None and address.project is not None:
                if scope not in resources:
                    names = ", ".join(sorted(resources)) or "(none)"
                    what = (
                        "is not a resource cell"
                        if any(c.full_name == scope for c in cells)
                        else "names no loaded cell"
                    )
                    raise ReleaseError(
                        f"{where}: {scope!r} {what}; a per-cell policy needs a resource cell "
                        f"(these are: {names}). Use 'project' to cover a whole project."
                    )
            else:
                raise ReleaseError(
                    f"{where}: {scope!r} names no loaded project (known: "
                    f"{', '.join(sorted(projects))}); write 'project' or 'project.cell'."
                )


def normalize_freshness(value: Any, *, where: str = "freshness") -> FreshnessOverrides:
    """Read a call-time freshness instruction: None, a policy, its compact string, a JSON
    object text, or a mapping {"project" | "project.cell" | "*": policy or string}."""
    if value is None:
        return FreshnessOverrides()
    if isinstance(value, FreshnessOverrides):
        return value
    if isinstance(value, str) and value.strip().startswith("{"):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ReleaseError(f"{where}: {value!r} is not valid JSON ({exc})") from None
    if isinstance(value, Mapping):
        default: Freshness | None = None
        scopes: dict[str, Freshness] = {}
        for scope, policy in value.items():
            if not isinstance(scope, str) or not scope:
                raise ReleaseError(f"{where}: scope {scope!r} must be 'project' or 'project.cell'")
            parsed = as_freshness(policy, where=f"{where}[{scope!r}]")
            if scope == ALL:
                default = parsed
            else:
                scopes[scope] = parsed
        return FreshnessOverrides(default, scopes)
    return FreshnessOverrides(as_freshness(value, where=where))


__all__ = [
    "Current",
    "DateRange",
    "Freshness",
    "FreshnessOverrides",
    "History",
    "Latest",
    "Observation",
    "Present",
    "Release",
    "as_freshness",
    "current",
    "date_range",
    "latest",
    "normalize_freshness",
    "parse_freshness",
    "present",
    "release",
]
