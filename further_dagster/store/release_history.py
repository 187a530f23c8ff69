"""The observed releases of each resource instance: one JSON-lines file per structural key.

Every answer of `get_release()` (from a Session, a Dagster observation or the release sensor) is
appended as one `ReleaseObservation` line with a single `write` on an `O_APPEND` descriptor, so
concurrent writers (threads, processes, hosts on one filesystem) never interleave inside a line.
Freshness policies read the history to decide which release to use without calling get_release.

The file grows by one short line per observation; past `COMPACT_BYTES` it is rewritten keeping the
first and the last observation of each release (all a policy ever needs), through a temporary
file and one rename. An observation appended by another process during that rewrite may be lost:
that costs a policy one extra get_release() call, never a wrong result.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from pathlib import Path

from pydantic import ValidationError

from further_dagster import settings
from further_dagster.store import layout
from further_dagster.store.records import ReleaseObservation, write_atomic

log = logging.getLogger("further.store")

COMPACT_BYTES = 256 * 1024


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
        """Append one observation (creating the file and its directories if needed)."""
        obs = ReleaseObservation(release=release, observed_at=observed_at, source=source)
        path = layout.release_history_path_str(self._root_str, project, cell, skey)
        line = obs.model_dump_json().encode("utf-8") + b"\n"
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
        return obs

    def read(self, project: str, cell: str, skey: str) -> list[ReleaseObservation]:
        """Every observation, oldest first; an unreadable line (a torn write) is skipped."""
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
        found.sort(key=lambda o: o.observed_at)
        return found

    def compact(self, project: str, cell: str, skey: str) -> None:
        """Keep the first and the last observation of each release."""
        kept: dict[str, list[ReleaseObservation]] = {}
        for obs in self.read(project, cell, skey):
            ends = kept.setdefault(obs.release, [obs, obs])
            if obs.observed_at < ends[0].observed_at:
                ends[0] = obs
            if obs.observed_at >= ends[1].observed_at:
                ends[1] = obs
        lines = sorted({o for ends in kept.values() for o in ends}, key=lambda o: o.observed_at)
        payload = b"".join(o.model_dump_json().encode("utf-8") + b"\n" for o in lines)
        write_atomic(self.path(project, cell, skey), payload)


__all__ = ["COMPACT_BYTES", "ReleaseHistory"]
