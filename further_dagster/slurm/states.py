"""Slurm job states, once: which may still run, which ended, how to summarise an array, and
what each one means for the person reading the message.

`STATES` is the one table; `LIVE_STATES`, `ENDED_STATES` and `PRIORITY` are derived from it.
A state Slurm adds later and this table lacks is neither live nor ended: callers treat it as
a job that stopped for an unknown reason.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "ENDED_STATES",
    "LIVE_STATES",
    "PRIORITY",
    "STATES",
    "UNKNOWN",
    "JobState",
    "explain",
    "is_ended",
    "is_live",
    "summarize",
]

# Not a Slurm state: what a client reports for a job neither slurmctld nor accounting knows.
UNKNOWN = "UNKNOWN"


@dataclass(frozen=True)
class JobState:
    """One row of the table.

    Attributes:
        name: the state as squeue/sacct print it (first word: "CANCELLED by 0" -> "CANCELLED").
        live: the job may still run, or run again after a requeue.
        ended: the job is over; a task that wrote no result file by now never will.
        explanation: completes "Slurm job 123 ..." in messages, with the fix where there is one.
    """

    name: str
    live: bool
    ended: bool
    explanation: str


def _live(name: str, explanation: str) -> JobState:
    return JobState(name, live=True, ended=False, explanation=explanation)


def _ended(name: str, explanation: str) -> JobState:
    return JobState(name, live=False, ended=True, explanation=explanation)


# In priority order: for an array's parent id, the first state any task is in says most about
# the array (running before pending before failures before COMPLETED).
STATES: tuple[JobState, ...] = (
    _live("RUNNING", "is running"),
    _live("COMPLETING", "is completing"),
    _live("CONFIGURING", "is waiting for its nodes to boot"),
    _live("REQUEUED", "was requeued and will run again"),
    _live("RESIZING", "is being resized"),
    _live("PENDING", "is waiting for resources"),
    _live("SUSPENDED", "is suspended"),
    _ended("NODE_FAIL", "lost its node (node failure); run it again"),
    _ended("BOOT_FAIL", "could not boot its node; run it again"),
    _ended("OUT_OF_MEMORY", "ran out of memory (raise SlurmSpec.mem_gb)"),
    _ended("FAILED", "failed (non-zero exit; see its log files)"),
    _ended("TIMEOUT", "timed out (raise SlurmSpec.time_min)"),
    _ended("DEADLINE", "missed its deadline (sbatch --deadline)"),
    _ended("PREEMPTED", "was preempted by a job of a higher-priority partition"),
    _ended("CANCELLED", "was cancelled (scancel, or by an administrator)"),
    _ended("REVOKED", "was revoked (a sibling job of its federation started)"),
    _ended("COMPLETED", "completed"),
    # Rarely seen in an array: alphabetical, as the summary ordered them before this table.
    _live("REQUEUE_FED", "was requeued by its federation"),
    _live("REQUEUE_HOLD", "was requeued and is held (scontrol release)"),
    _live("RESV_DEL_HOLD", "is held: its reservation was deleted (scontrol release)"),
    _live("SIGNALING", "is being signalled"),
    _ended("SPECIAL_EXIT", "ended with a special exit (held for requeue)"),
    _live("STAGE_OUT", "is staging out its files"),
    _live("STOPPED", "is stopped (SIGSTOP); it keeps its allocation"),
    # Counted live: accounting lags the controller, so a fresh job may be unknown for a moment.
    _live(UNKNOWN, "is unknown to Slurm (not in squeue, no accounting record)"),
)

_BY_NAME = {row.name: row for row in STATES}
LIVE_STATES: frozenset[str] = frozenset(row.name for row in STATES if row.live)
ENDED_STATES: frozenset[str] = frozenset(row.name for row in STATES if row.ended)
PRIORITY: tuple[str, ...] = tuple(row.name for row in STATES)


def is_live(state: str) -> bool:
    """The job may still run (or run again after a requeue)."""
    return state in LIVE_STATES


def is_ended(state: str) -> bool:
    """The job is over: a result it has not written by now will not appear."""
    return state in ENDED_STATES


def explain(state: str) -> str:
    """What `state` means, worded to follow "Slurm job 123 ..."."""
    row = _BY_NAME.get(state)
    return row.explanation if row is not None else f"ended {state}"


def summarize(states: Iterable[str]) -> str:
    """The state that says most about a job array, from its tasks' states.

    Known states by `PRIORITY`; states the table lacks come after them, alphabetically;
    no task at all is `UNKNOWN`.
    """
    found = set(states)
    for name in PRIORITY:
        if name in found:
            return name
    return min(found) if found else UNKNOWN
