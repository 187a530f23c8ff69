"""One attempt at computing an instance, run while its lease is held.

`ArtifactStore.ensure` decides *whether* to compute (stored? someone else computing?); this
module is *how*: check the previous state against `max_attempts`, record `running`, clear what
crashed attempts left, run `compute` with its log captured, encode the contributions into
`result.tmp-<uuid>/`, write manifest and provenance, commit with one rename, record `success`,
or record `failed` with the full traceback and clean up.
"""

from __future__ import annotations

import datetime as dt
import errno
import logging
import os
import shutil
import time
import traceback
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from further_dagster.errors import CellComputeError, ContributionError, CorruptArtifactError
from further_dagster.store import layout
from further_dagster.store.base import ComputeFn
from further_dagster.store.cell_log import capture_cell_log
from further_dagster.store.codecs import encode_value
from further_dagster.store.provenance import process_facts
from further_dagster.store.records import (
    ErrorInfo,
    Manifest,
    ManifestEntry,
    Provenance,
    State,
    read_record,
    utcnow,
    write_record,
)

log = logging.getLogger("further.store")


@dataclass(frozen=True)
class AttemptResult:
    """What a finished attempt reports back to `ensure`."""

    attempt: int
    duration_s: float


@dataclass(frozen=True)
class Attempt:
    """The next attempt at `<project>.<cell>@<key>` in instance directory `inst`."""

    project: str
    cell: str
    key: str
    inst: Path
    max_attempts: int

    @property
    def label(self) -> str:
        """`project.cell@key8`, as messages name an instance."""
        return f"{self.project}.{self.cell}@{self.key[:8]}"

    @property
    def state_file(self) -> Path:
        return layout.state_path(self.inst)

    def run(self, compute: ComputeFn, draft: Provenance) -> AttemptResult:
        """Run and commit; raises `CellComputeError` for compute failures (state recorded)."""
        previous = self._previous_state()
        if previous is not None:
            self._check_previous(previous)
        attempt = (previous.attempts if previous is not None else 0) + 1
        facts = process_facts()
        started = utcnow()
        running = State(
            status="running",
            attempts=attempt,
            created_at=previous.created_at if previous is not None else started,
            updated_at=started,
            started_at=started,
            host=facts.hostname,
            pid=facts.pid,
            slurm_job_id=facts.slurm_job_id,
        )
        write_record(self.state_file, running)
        remove_stale_temporaries(self.inst)
        tmp = layout.result_tmp_dir(self.inst, uuid.uuid4().hex)
        tmp.mkdir()
        t0 = time.monotonic()
        in_compute = True
        with capture_cell_log(layout.log_path(self.inst), self.project, self.cell) as cell_log:
            where = f"pid {facts.pid} on {facts.hostname}"
            if facts.slurm_job_id:
                where += f", slurm job {facts.slurm_job_id}"
            cell_log.note(logging.INFO, f"attempt {attempt} of {self.label} started ({where})")
            try:
                values = compute(tmp, cell_log.logger)
                in_compute = False
                committed_here = self._write_and_commit(values, tmp, draft, started, t0)
            except BaseException as exc:
                duration = time.monotonic() - t0
                shutil.rmtree(tmp, ignore_errors=True)
                cell_log.note(
                    logging.ERROR,
                    f"attempt {attempt} of {self.label} failed after {duration:.3f}s",
                    (type(exc), exc, exc.__traceback__),
                )
                failed = self._record_failure(running, exc, duration)
                if in_compute and isinstance(exc, Exception):
                    raise self._compute_error(failed, exc) from exc
                raise
            duration = time.monotonic() - t0
            cell_log.note(
                logging.INFO, f"attempt {attempt} of {self.label} stored in {duration:.3f}s"
            )
        if committed_here:
            finished = utcnow()
            success = {
                "status": "success",
                "updated_at": finished,
                "finished_at": finished,
                "duration_s": duration,
            }
            write_record(self.state_file, running.model_copy(update=success))
        return AttemptResult(attempt=attempt, duration_s=duration)

    # --- before -------------------------------------------------------------------------

    def _previous_state(self) -> State | None:
        try:
            return read_record(self.state_file, State)
        except FileNotFoundError:
            return None
        except CorruptArtifactError as exc:
            log.warning("ignoring unreadable state (%s); starting a fresh attempt count", exc)
            return None

    def _check_previous(self, previous: State) -> None:
        if previous.status == "failed" and previous.attempts >= self.max_attempts:
            error = previous.error
            assert error is not None  # guaranteed by State's validator
            raise CellComputeError(
                f"{self.label} failed {previous.attempts} time(s), reaching max_attempts="
                f"{self.max_attempts}; not running it again. Last error: {error.type}: "
                f"{error.message}\n{error.traceback}\nFix the cause, then bump the cell's "
                f"logic_version, or delete {self.state_file} to retry (FURTHER_MAX_ATTEMPTS "
                f"raises the limit); the log is in {layout.log_path(self.inst)}",
                cell=f"{self.project}.{self.cell}",
                key=self.key,
                state_path=str(self.state_file),
                remote_traceback=error.traceback,
            )
        if previous.status == "running":
            log.warning(
                "%s: previous attempt %d (pid %d on %s) did not finish (killed or crashed); "
                "computing again",
                self.label,
                previous.attempts,
                previous.pid,
                previous.host,
            )

    # --- commit -------------------------------------------------------------------------

    def _write_and_commit(
        self,
        values: Mapping[str, Any],
        tmp: Path,
        draft: Provenance,
        started: dt.datetime,
        t0: float,
    ) -> bool:
        """Encode, write the records, rename. False if another process committed first."""
        if not isinstance(values, Mapping):
            raise ContributionError(
                f"{self.label}: compute returned a {type(values).__qualname__}; it must return "
                f"a mapping of contribution name -> value"
            )
        for name in values:
            layout.validate_contribution_name(name)
        entries: dict[str, ManifestEntry] = {
            name: encode_value(name, value, tmp) for name, value in values.items()
        }
        timings = {
            "process": process_facts(),
            "started_at": started,
            "finished_at": utcnow(),
            "duration_s": time.monotonic() - t0,
        }
        write_record(layout.provenance_path(tmp), draft.model_copy(update=timings), atomic=False)
        write_record(layout.manifest_path(tmp), Manifest(contributions=entries), atomic=False)
        result = layout.result_dir(self.inst)
        try:
            os.rename(tmp, result)
        except OSError as exc:
            if exc.errno in (errno.EEXIST, errno.ENOTEMPTY) and result.is_dir():
                shutil.rmtree(tmp, ignore_errors=True)
                log.warning(
                    "%s was committed by another process while this one computed it (our lease "
                    "was taken over); keeping theirs",
                    self.label,
                )
                return False
            raise
        return True

    # --- failure ------------------------------------------------------------------------

    def _record_failure(self, running: State, exc: BaseException, duration: float) -> State:
        now = utcnow()
        error = ErrorInfo(
            type=f"{type(exc).__module__}.{type(exc).__qualname__}",
            message=str(exc),
            traceback="".join(traceback.format_exception(exc)),
        )
        failed = running.model_copy(
            update={
                "status": "failed",
                "updated_at": now,
                "finished_at": now,
                "duration_s": duration,
                "error": error,
            }
        )
        try:
            write_record(self.state_file, failed)
        except OSError as write_exc:  # do not mask the real error
            log.error("could not record failure in %s: %s", self.state_file, write_exc)
        return failed

    def _compute_error(self, failed: State, exc: Exception) -> CellComputeError:
        remaining = self.max_attempts - failed.attempts
        retry = (
            f"the next call retries it ({remaining} attempt(s) left)"
            if remaining > 0
            else "it will not be retried: fix the cause, then bump logic_version or delete "
            f"{self.state_file} to retry"
        )
        assert failed.error is not None
        return CellComputeError(
            f"{self.label} failed on attempt {failed.attempts}/{self.max_attempts}: "
            f"{type(exc).__name__}: {exc}. Traceback in {self.state_file} and "
            f"{layout.log_path(self.inst)}; {retry}",
            cell=f"{self.project}.{self.cell}",
            key=self.key,
            state_path=str(self.state_file),
            remote_traceback=failed.error.traceback,
        )


def remove_stale_temporaries(inst: Path) -> None:
    """Remove `result.tmp-*` dirs and stray record temp files left by crashed attempts.

    Only called while holding the lease, so no live attempt can be writing into them.
    """
    with os.scandir(inst) as entries:
        for entry in entries:
            if layout.is_result_tmp_name(entry.name):
                shutil.rmtree(entry.path, ignore_errors=True)
            elif entry.name.startswith(".") and ".tmp-" in entry.name:
                try:
                    os.unlink(entry.path)
                except OSError:
                    pass
