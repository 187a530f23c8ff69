"""The observed releases of each resource instance: one JSON-lines file per structural key.

Every answer of `get_release()` (from a Session, a Dagster observation or the release sensor) is
kept in a small "last seen" record beside the history (`<skey>.last.json`, rewritten atomically),
and the history file grows only when the release differs from the last one seen: the first
observation of a release is appended as one `ReleaseObservation` line (a single `write` on an
`O_APPEND` descriptor, so concurrent writers never interleave inside a line), and the last
observation of the previous release is flushed as a line just before it. A sensor re-observing
the same release every tick therefore rewrites one tiny file instead of appending a line.
`read()` returns the lines plus the last-seen observation, so a policy still knows when the
current release was last observed (`current(shelf_life)` needs it). Freshness policies read the
history to decide which release to use without calling get_release.

Past `COMPACT_BYTES` the file is rewritten keeping the first and the last observation of each
release (all a policy ever needs), through a temporary file and one rename. An observation
recorded by another process during that rewrite, or two writers racing on the last-seen record,
may lose an observation: that costs a policy one extra get_release() call, never a wrong result.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from further_dagster import settings
from further_dagster.store import layout
from further_dagster.store.records import ReleaseObservation, write_atomic

log = logging.getLogger("further.store")

COMPACT_BYTES = 256 * 1024


class LastSeen(BaseModel):
    """The latest observation of one resource instance, and whether it is already a line of
    the history file (the first observation of a release is)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    observation: ReleaseObservation
    logged: bool = False


class ReleaseHistory:
    """Release histories under a store root (default: `FURTHER_ROOT`, else `.further` beside
    the nearest pyproject.toml; see `further_dagster.settings`)."""

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = settings.store_root(root)
        self._root_str = str(self.root)

    def path(self, project: str, cell: str, skey: str) -> Path:
        """The history file of one resource instance."""
        return Path(layout.release_history_path_str(self._root_str, project, cell, skey))

    def record(
        self,
        project: str,
        cell: str,
        skey: str,
        release: str,
        observed_at: dt.datetime,
        source: str = "session",
    ) -> ReleaseObservation:
        """Record one observation: a new last-seen record; a history line (with the last
        observation of the previous release before it) only when the release changed."""
        obs = ReleaseObservation(release=release, observed_at=observed_at, source=source)
        last = self.last_seen(project, cell, skey)
        if last is not None and last.observation.release == release:
            if observed_at >= last.observation.observed_at:
                self._write_last_seen(project, cell, skey, LastSeen(observation=obs))
            return obs
        lines = [obs]
        if last is not None and not last.logged:
            lines.insert(0, last.observation)
        self._append(project, cell, skey, lines)
        self._write_last_seen(project, cell, skey, LastSeen(observation=obs, logged=True))
        return obs

    def last_seen(self, project: str, cell: str, skey: str) -> LastSeen | None:
        """The last-seen record of the instance, if any (an unreadable one counts as none)."""
        path = layout.release_last_seen_path_str(self._root_str, project, cell, skey)
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except FileNotFoundError:
            return None
        try:
            return LastSeen.model_validate_json(data)
        except ValidationError:
            log.warning("%s is not a last-seen record; ignored", path)
            return None

    def _write_last_seen(self, project: str, cell: str, skey: str, last: LastSeen) -> None:
        path = Path(layout.release_last_seen_path_str(self._root_str, project, cell, skey))
        write_atomic(path, last.model_dump_json().encode("utf-8"))

    def _append(
        self, project: str, cell: str, skey: str, observations: list[ReleaseObservation]
    ) -> None:
        """Append lines with one `write` (creating the file and its directories if needed)."""
        path = layout.release_history_path_str(self._root_str, project, cell, skey)
        line = b"".join(o.model_dump_json().encode("utf-8") + b"\n" for o in observations)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except FileNotFoundError:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
            size = os.fstat(fd).st_size
        finally:
            os.close(fd)
        if size > COMPACT_BYTES:
            self.compact(project, cell, skey)

    def read(self, project: str, cell: str, skey: str) -> list[ReleaseObservation]:
        """The observations kept (the history lines and the last-seen one), oldest first; an
        unreadable line (a torn write) is skipped."""
        found = self._read_lines(project, cell, skey)
        last = self.last_seen(project, cell, skey)
        if last is not None and last.observation not in found:
            found.append(last.observation)
        found.sort(key=lambda o: o.observed_at)
        return found

    def _read_lines(self, project: str, cell: str, skey: str) -> list[ReleaseObservation]:
        path = self.path(project, cell, skey)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return []
        found: list[ReleaseObservation] = []
        for number, line in enumerate(data.splitlines(), 1):
            if not line.strip():
                continue
            try:
                found.append(ReleaseObservation.model_validate_json(line))
            except ValidationError:
                log.warning("%s:%d is not a release observation; skipped", path, number)
        return found

    def compact(self, project: str, cell: str, skey: str) -> None:
        """Keep the first and the last observation of each release."""
        kept: dict[str, list[ReleaseObservation]] = {}
        for obs in self._read_lines(project, cell, skey):
            ends = kept.setdefault(obs.release, [obs, obs])
            if obs.observed_at < ends[0].observed_at:
                ends[0] = obs
            if obs.observed_at >= ends[1].observed_at:
                ends[1] = obs
        lines = sorted({o for ends in kept.values() for o in ends}, key=lambda o: o.observed_at)
        payload = b"".join(o.model_dump_json().encode("utf-8") + b"\n" for o in lines)
        write_atomic(self.path(project, cell, skey), payload)


__all__ = ["COMPACT_BYTES", "LastSeen", "ReleaseHistory"]
