"""One attempt at computing an instance, run while its lease is held.

`ArtifactStore.ensure` decides *whether* to compute (stored? someone else computing?); this
module is *how*: check the previous state against `max_attempts`, record `running`, clear what
dead attempts left, run `compute` with its log captured, encode the contributions into this
attempt's own `result.tmp-<lease token>/`, write manifest and provenance, commit with one
rename, record `success`; or record how it ended and clean up.

How an attempt ends decides whether it used up a try (`State.failures`, limited by
`max_attempts`):

| what happened                                     | status        | counted | raised           |
|---------------------------------------------------|---------------|---------|------------------|
| compute raised an `Exception`                     | `failed`      | yes     | CellComputeError |
| wrong / missing contributions (ContributionError) | `failed`      | refused | itself           |
| Ctrl-C, SystemExit, SIGTERM/SIGHUP, abandoned     | `interrupted` | no      | itself           |
| an input could not be loaded (`InputLoadError`)   | `environment` | no      | itself           |
| an `OSError` while setting up or committing       | `environment` | no      | `StoreError`     |

A `ContributionError` is deterministic, so the key is refused on the next call (like a key that
reached max_attempts) until someone retries it: every refusal names the one call that does,
`Session.call(..., retry_failed=True)` or `further-dagster retry`.

Every state write happens under the lease's guard and only while the lock still carries this
attempt's token (`Lease.holding`): a holder that stalled past its lease (SIGSTOP, a suspended
laptop) and was taken over never overwrites the taker's state, and if the taker committed, the
resumed holder returns the stored result instead of failing.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import logging
import os
import shutil
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, NoReturn

from further_dagster.errors import (
    CellComputeError,
    ContributionError,
    CorruptArtifactError,
    InputLoadError,
    StoreError,
)
from further_dagster.store import environment, interrupts, layout
from further_dagster.store.base import Computed, ComputeFn
from further_dagster.store.cell_log import CellLog, capture_cell_log
from further_dagster.store.codecs import encode_value
from further_dagster.store.durability import fsync_dir, fsync_tree
from further_dagster.store.lease import Lease, remove_stale_temporaries
from further_dagster.store.provenance import process_facts
from further_dagster.store.records import (
    ErrorInfo,
    Manifest,
    ManifestEntry,
    Provenance,
    State,
    Status,
    read_record,
    utcnow,
    write_record,
)

log = logging.getLogger("further.store")

Phase = Literal["setup", "compute", "commit"]

_ENDED: dict[str, str] = {
    "failed": "failed",
    "interrupted": "was interrupted (not counted)",
    "environment": "failed in its environment (not counted)",
}

_DOING: dict[Phase, str] = {
    "setup": "preparing the attempt",
    "compute": "computing",
    "commit": "committing the result",
}


class AttemptResult:
    """What a finished attempt reports back to `ensure`.

    `hit` is True when the result was committed by another process (this one lost its lease
    while it computed, or the other committed first): the stored result is theirs.
    """

    __slots__ = ("attempt", "duration_s", "hit")

    def __init__(self, attempt: int, duration_s: float, *, hit: bool = False) -> None:
        self.attempt = attempt
        self.duration_s = duration_s
        self.hit = hit


def retry_hint(root: Path, project: str, cell: str, key: str) -> str:
    """The one call that retries a refused key, as every refusal message names it."""
    return (
        f"`Session.call(..., retry_failed=True)` or "
        f"`further-dagster retry --root {root} {project}.{cell} {key}`"
    )


class Attempt:
    """The next attempt at `<project>.<cell>@<key>` in instance directory `inst`, under `lease`.

    `root` is the store root (named in messages); `fsync` flushes every file and directory of
    the result before the commit rename (`FURTHER_FSYNC`); `before_commit` runs right before
    that rename (the store opens its index there) and must not raise.
    """

    def __init__(
        self,
        project: str,
        cell: str,
        key: str,
        inst: Path,
        max_attempts: int,
        lease: Lease,
        *,
        root: Path,
        fsync: bool = False,
        before_commit: Callable[[], None] | None = None,
    ) -> None:
        self.project, self.cell, self.key, self.inst = project, cell, key, inst
        self.max_attempts = max_attempts
        self.lease = lease
        self.root = root
        self.fsync = fsync
        self.before_commit = before_commit
        self._running: State | None = None
        self._thread_id: int | None = None
        self._interrupted: str | None = None

    @property
    def label(self) -> str:
        """`project.cell@key8`, as messages name an instance."""
        return f"{self.project}.{self.cell}@{self.key[:8]}"

    @property
    def state_file(self) -> Path:
        return layout.state_path(self.inst)

    @property
    def retry_hint(self) -> str:
        return retry_hint(self.root, self.project, self.cell, self.key)

    # --- the attempt ----------------------------------------------------------------------

    def run(self, compute: ComputeFn, draft: Provenance) -> AttemptResult:
        """Run and commit. Raises as the module's table says (state recorded)."""
        previous = self._previous_state()
        if previous is not None:
            self._check_previous(previous)
        attempt = (previous.attempts if previous is not None else 0) + 1
        facts = process_facts()
        started = utcnow()
        running = State(
            status="running",
            attempts=attempt,
            failures=previous.failures if previous is not None else 0,
            created_at=previous.created_at if previous is not None else started,
            updated_at=started,
            started_at=started,
            host=facts.hostname,
            pid=facts.pid,
            slurm_job_id=facts.slurm_job_id,
            reset_at=previous.reset_at if previous is not None else None,
        )
        try:
            if not self._write_state(running):
                self._raise_lost(None)
        except OSError as exc:
            raise self._environment_error(exc, "recording the attempt's state") from exc
        self._running = running
        self._thread_id = threading.get_ident()
        interrupts.register(str(self.inst), self)
        try:
            return self._run(compute, draft, running, started)
        finally:
            interrupts.unregister(str(self.inst), self)

    def _run(
        self, compute: ComputeFn, draft: Provenance, running: State, started: dt.datetime
    ) -> AttemptResult:
        tmp = layout.result_tmp_dir(self.inst, self.lease.token)
        t0 = time.monotonic()
        phase: Phase = "setup"
        where = f"pid {running.pid} on {running.host}"
        if running.slurm_job_id:
            where += f", slurm job {running.slurm_job_id}"
        with contextlib.ExitStack() as stack:
            cell_log: CellLog | None = None
            try:
                remove_stale_temporaries(self.inst, self.lease)
                tmp.mkdir()
                self.lease.watch(tmp)
                cell_log = stack.enter_context(
                    capture_cell_log(layout.log_path(self.inst), self.project, self.cell)
                )
                cell_log.note(
                    logging.INFO, f"attempt {running.attempts} of {self.label} started ({where})"
                )
                phase = "compute"
                values = compute(tmp, cell_log.logger)
                if isinstance(values, Computed):
                    draft = draft.model_copy(update={"extra": {**draft.extra, **values.extra}})
                    values = values.values
                self._raise_if_interrupted()
                phase = "commit"
                committed_here = self._write_and_commit(values, tmp, draft, started, t0)
            except BaseException as exc:
                self.lease.unwatch(tmp)
                shutil.rmtree(tmp, ignore_errors=True)
                return self._after_failure(exc, phase, running, time.monotonic() - t0, cell_log)
            self.lease.unwatch(tmp)
            duration = time.monotonic() - t0
            done = "stored" if committed_here else "found committed by another process"
            cell_log.note(
                logging.INFO,
                f"attempt {running.attempts} of {self.label} {done} in {duration:.3f}s",
            )
        finished = utcnow()
        success = running.model_copy(
            update={
                "status": "success",
                "updated_at": finished,
                "finished_at": finished,
                "duration_s": duration,
            }
        )
        try:
            if not self._write_state(success) and not committed_here:
                self._warn_lost_but_stored()  # the taker committed and records its own state
        except OSError as exc:  # the result is committed, hence stored: say so, do not fail
            log.error(
                "%s is committed, but its success state could not be written to %s: %s",
                self.label,
                self.state_file,
                exc,
            )
        return AttemptResult(running.attempts, duration, hit=not committed_here)

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
        error = previous.error
        if previous.status == "failed" and error is not None and previous.failures > 0:
            if not error.retryable:
                raise ContributionError(
                    f"{self.label} is refused: attempt {previous.attempts} returned "
                    f"contributions that do not match the declaration, which is deterministic, "
                    f"so it is not run again. {error.message}\nFix make() or `contributions`, "
                    f"then retry it with {self.retry_hint} (or bump the cell's logic_version). "
                    f"The error is recorded in {self.state_file}, the log in "
                    f"{layout.log_path(self.inst)}"
                )
            if previous.failures >= self.max_attempts:
                raise CellComputeError(
                    f"{self.label} failed {previous.failures} time(s), reaching max_attempts="
                    f"{self.max_attempts}; not running it again. Last error: {error.type}: "
                    f"{error.message}\n{error.traceback}\nFix the cause, then retry it with "
                    f"{self.retry_hint}, or bump the cell's logic_version "
                    f"(FURTHER_MAX_ATTEMPTS raises the limit). The error is recorded in "
                    f"{self.state_file}, the log in {layout.log_path(self.inst)}",
                    cell=f"{self.project}.{self.cell}",
                    key=self.key,
                    state_path=str(self.state_file),
                    remote_traceback=error.traceback,
                )
        if previous.status == "running":
            log.warning(
                "%s: previous attempt %d (pid %d on %s) did not finish (killed or crashed; not "
                "counted as a failure); computing again",
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
        if self.fsync:
            fsync_tree(tmp)
        result = layout.result_dir(self.inst)
        if self.before_commit is not None:
            self.before_commit()
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
        if self.fsync:
            fsync_dir(self.inst)
        return True

    # --- state, under the lease -----------------------------------------------------------

    def _write_state(self, state: State) -> bool:
        """Write `state` if the lease is still ours (under its guard); False if it was lost."""
        with self.lease.holding() as ours:
            if not ours:
                return False
            write_record(self.state_file, state, fsync=self.fsync)
        return True

    # --- interruption ---------------------------------------------------------------------

    def interrupt(self, reason: str, *, from_signal: bool = False) -> bool:
        """Record this attempt as `interrupted` and release its lease, from another thread or a
        signal handler; what compute returns afterwards is discarded. False if it already was.
        """
        if self._interrupted is not None or self._running is None:
            return False
        self._interrupted = reason
        now = utcnow()
        state = self._running.model_copy(
            update={
                "status": "interrupted",
                "updated_at": now,
                "finished_at": now,
                "error": ErrorInfo(
                    type="interrupted", message=reason, traceback=self._where_it_was(reason)
                ),
            }
        )
        try:
            with self.lease.holding(patient=not from_signal) as ours:
                if ours:
                    write_record(self.state_file, state, fsync=self.fsync)
        except OSError as exc:
            log.error("could not record the interruption in %s: %s", self.state_file, exc)
        finally:
            self.lease.release(patient=not from_signal)
        if not from_signal:  # a signal handler must not take the logging locks
            log.warning("%s interrupted (%s); its lease is released", self.label, reason)
        return True

    def _where_it_was(self, reason: str) -> str:
        frame = sys._current_frames().get(self._thread_id or -1)
        if frame is None:
            return f"{reason}\n"
        return f"{reason}; the attempt's thread was at:\n" + "".join(traceback.format_stack(frame))

    def _raise_if_interrupted(self) -> None:
        if self._interrupted is not None:
            raise StoreError(
                f"{self.label} was interrupted ({self._interrupted}) while make() ran; what it "
                f"returned is discarded"
            )

    # --- how it ended -----------------------------------------------------------------------

    def _classify(self, exc: BaseException, phase: Phase) -> tuple[Status, bool]:
        """(status, retryable) of an attempt that ended with `exc` during `phase`."""
        if self._interrupted is not None or not isinstance(exc, Exception):
            return "interrupted", True
        if isinstance(exc, InputLoadError):
            return "environment", True
        if phase != "compute" and environment.os_error_in(exc) is not None:
            return "environment", True
        if isinstance(exc, ContributionError):
            return "failed", False
        return "failed", True

    def _after_failure(
        self,
        exc: BaseException,
        phase: Phase,
        running: State,
        duration: float,
        cell_log: CellLog | None,
    ) -> AttemptResult:
        """Record how the attempt ended and raise what the caller should see (or, when another
        process committed the result while this one had lost its lease, return that)."""
        status, retryable = self._classify(exc, phase)
        headline = (
            f"attempt {running.attempts} of {self.label} {_ENDED[status]} after {duration:.3f}s"
        )
        if cell_log is not None:
            cell_log.note(logging.ERROR, headline, (type(exc), exc, exc.__traceback__))
        else:
            log.error("%s: %s: %s", headline, type(exc).__name__, exc)
        if self._interrupted is not None:  # interrupt() recorded it and released the lease
            raise exc
        if phase == "commit" and isinstance(exc, Exception) and self._committed_by_other():
            return self._stored_by_other(running, duration)
        ended = self._ended_state(running, exc, status, retryable, duration)
        try:
            lost = not self._write_state(ended)
        except OSError as write_exc:  # do not mask the real error
            log.error("could not record %s in %s: %s", status, self.state_file, write_exc)
            lost = False
        if lost:
            return self._after_lost(exc, running)
        self._raise_for(exc, status, phase, ended)

    def _ended_state(
        self, running: State, exc: BaseException, status: Status, retryable: bool, duration: float
    ) -> State:
        now = utcnow()
        error = ErrorInfo(
            type=f"{type(exc).__module__}.{type(exc).__qualname__}",
            message=str(exc),
            traceback="".join(traceback.format_exception(exc)),
            retryable=retryable,
        )
        return running.model_copy(
            update={
                "status": status,
                "failures": running.failures + (1 if status == "failed" else 0),
                "updated_at": now,
                "finished_at": now,
                "duration_s": duration,
                "error": error,
            }
        )

    def _raise_for(
        self, exc: BaseException, status: Status, phase: Phase, ended: State
    ) -> NoReturn:
        if status == "interrupted" or isinstance(exc, InputLoadError):
            raise exc
        if status == "environment":
            os_error = environment.os_error_in(exc)
            assert os_error is not None  # that is what made it an environment error
            raise self._environment_error(os_error, _DOING[phase]) from exc
        if isinstance(exc, ContributionError):
            exc.add_note(
                f"{self.label}: recorded as failed in {self.state_file}; it is deterministic, "
                f"so the next call refuses the key instead of running it. Fix make() or "
                f"`contributions`, then retry it with {self.retry_hint}."
            )
            raise exc
        if phase == "compute" and isinstance(exc, Exception):
            raise self._compute_error(ended, exc) from exc
        raise exc

    def _committed_by_other(self) -> bool:
        return layout.result_dir(self.inst).is_dir()

    def _stored_by_other(self, running: State, duration: float) -> AttemptResult:
        """Our commit failed, but the key is stored (a holder we took over from resumed and
        committed first, or we are that holder): the result is theirs. The state says it is
        stored, unless this process lost its lease (then it is the taker's to write)."""
        now = utcnow()
        success = running.model_copy(
            update={
                "status": "success",
                "updated_at": now,
                "finished_at": now,
                "duration_s": duration,
            }
        )
        try:
            lost = not self._write_state(success)
        except OSError as exc:
            log.error("could not record success in %s: %s", self.state_file, exc)
            lost = False
        if lost:
            self._warn_lost_but_stored()
        else:
            log.warning("%s: committed by another process meanwhile; keeping theirs", self.label)
        return AttemptResult(running.attempts, 0.0, hit=True)

    def _warn_lost_but_stored(self) -> None:
        log.warning(
            "%s: this process lost its lease while computing (it stalled for longer than "
            "lease_s=%gs); another process committed the result, which this call returns",
            self.label,
            self.lease.lease_s,
        )

    def _after_lost(self, exc: BaseException, running: State) -> AttemptResult:
        """This process lost its lease while it computed: it wrote no state."""
        if not isinstance(exc, Exception):
            raise exc
        if self._committed_by_other():
            self._warn_lost_but_stored()
            return AttemptResult(running.attempts, 0.0, hit=True)
        self._raise_lost(exc)

    def _raise_lost(self, exc: BaseException | None) -> NoReturn:
        because = f" (this attempt ended with {type(exc).__name__}: {exc})" if exc else ""
        raise StoreError(
            f"{self.label}: this process lost its lease on {self.lease.lock_path}: it stalled "
            f"for longer than lease_s={self.lease.lease_s:g}s (suspended, stopped, or a long C "
            f"call holding the GIL) and another process took the key over; this attempt wrote "
            f"no state{because}. Call again to wait for that process's result."
        ) from exc

    def _environment_error(self, exc: OSError, doing: str) -> StoreError:
        return environment.explain(
            exc, label=self.label, key=self.key, root=self.root, doing=doing, path=self.inst
        )

    def _compute_error(self, failed: State, exc: Exception) -> CellComputeError:
        remaining = self.max_attempts - failed.failures
        retry = (
            f"the next call retries it ({remaining} attempt(s) left)"
            if remaining > 0
            else "it will not be retried: fix the cause, then retry it with "
            f"{self.retry_hint}, or bump logic_version"
        )
        overall = ""
        if failed.attempts != failed.failures:
            overall = f" (attempt {failed.attempts} in all)"
        assert failed.error is not None
        return CellComputeError(
            f"{self.label} failed on attempt {failed.failures}/{self.max_attempts}{overall}: "
            f"{type(exc).__name__}: {exc}. Traceback in {self.state_file} and "
            f"{layout.log_path(self.inst)}; {retry}",
            cell=f"{self.project}.{self.cell}",
            key=self.key,
            state_path=str(self.state_file),
            remote_traceback=failed.error.traceback,
        )
