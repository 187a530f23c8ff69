"""Resolve the release of every resource instance of a call: policy + history + get_release.

The one place where the pure pieces meet the world: the freshness policy (core) decides from the
instance's release history (store) and the clock whether get_release() must be asked; every
answer is recorded in the history. A Session, a Dagster step, the executor, an observation and
the release sensor all resolve releases through `ReleaseResolver`.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from further_dagster.core.cell import Cell
from further_dagster.core.freshness import FreshnessOverrides, History, Latest, Observation
from further_dagster.core.keys import release_key, structural_key
from further_dagster.core.resource import call_get_release
from further_dagster.store import ReleaseHistory, Store

log = logging.getLogger("further")

Clock = Callable[[], dt.datetime]


def utc_now() -> dt.datetime:
    """The default clock."""
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True, slots=True)
class Resolved:
    """How one resource instance's release was chosen."""

    cell: str
    skey: str
    release: str
    policy: str
    observed: bool  # True if get_release() was called for it


class ReleaseResolver:
    """Callable `(cell, specs) -> release` for `CallContext.release_resolver`.

    Args:
        store: the artifact store (its root also holds the release histories).
        freshness: call-time overrides of the cells' own policies.
        clock: returns the current aware datetime (inject one in tests).
        source: recorded with each observation ("session", "dagster", "sensor").
        always_observe: call get_release() for every resource even when the policy would not
            (an observation: the sensor and Dagster's observe); the policy still chooses.
        history: the store's ReleaseHistory, if the caller keeps one.

    Resolutions are memoized per resource instance, so one call asks get_release() at most once
    per instance however often the graph reaches it. `resolved` lists what was chosen.
    """

    def __init__(
        self,
        store: Store,
        freshness: FreshnessOverrides | None = None,
        *,
        clock: Clock | None = None,
        source: str = "session",
        always_observe: bool = False,
        history: ReleaseHistory | None = None,
    ) -> None:
        self.store = store
        self.history = history or ReleaseHistory(store.root)
        self.freshness = freshness or FreshnessOverrides()
        self.clock = clock or utc_now
        self.source = source
        self.always_observe = always_observe
        self.resolved: dict[str, Resolved] = {}
        self.observed: dict[str, str] = {}  # skey -> what get_release() answered

    def __call__(self, cell: type[Cell], specs: Any) -> str:
        skey = structural_key(cell, specs)
        done = self.resolved.get(skey)
        if done is not None:
            return done.release
        policy = self.freshness.policy_for(cell)
        where = cell.full_name
        now = self.clock()
        history = History()
        if policy.needs_history:
            history = self.history_of(cell, specs, skey, extra=policy.pins())
        chosen: str | None = None
        if not self.always_observe:
            chosen = policy.choose(history, now, where=where)
        observed = chosen is None
        if observed:
            current = self.observe(cell, specs, skey, now)
            if policy.needs_history:
                history = History(
                    history.observations + (Observation(current, now),), history.stored
                )
            chosen = policy.choose(history, now, where=where) if self.always_observe else None
            if chosen is None:
                chosen = policy.accept(current, history, now, where=where)
        assert chosen is not None
        self.resolved[skey] = Resolved(cell.full_name, skey, chosen, str(policy), observed)
        return chosen

    def observe(self, cell: type[Cell], specs: Any, skey: str, now: dt.datetime) -> str:
        """Ask get_release() and record the answer in the history."""
        current = call_get_release(cell, specs)
        self.history.record(cell.project.name, cell.name, skey, current, now, self.source)
        self.observed[skey] = current
        return current

    def history_of(
        self, cell: type[Cell], specs: Any, skey: str, extra: tuple[str, ...] = ()
    ) -> History:
        """Observations of the instance and which releases have a stored result."""
        observations = tuple(
            Observation(o.release, o.observed_at.astimezone(dt.UTC))
            for o in self.history.read(cell.project.name, cell.name, skey)
        )
        candidates = {o.release for o in observations} | set(extra)
        stored = frozenset(
            r
            for r in candidates
            if self.store.is_stored(cell.project.name, cell.name, release_key(cell, specs, r))
        )
        return History(observations, stored)


def observe_all_latest(store: Store, *, clock: Clock | None = None, source: str) -> Any:
    """A resolver that observes every resource with `latest()` (what Dagster's observe uses)."""
    return ReleaseResolver(
        store, FreshnessOverrides(Latest()), clock=clock, source=source, always_observe=True
    )


__all__ = ["Clock", "ReleaseResolver", "Resolved", "observe_all_latest", "utc_now"]
