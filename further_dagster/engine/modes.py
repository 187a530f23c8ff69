"""Execution modes and the ceiling rule of the Further seed.

    INLINE
    /    \\
 LOCAL   DASK
   |       |
 LOCAL_PROCESSES  DASK_STATIC_DAG
           |
         SLURM

The session (or run) sets the ceiling; a cell may ask for a mode at or below it within the same
branch, never across branches; `in_parallel=False` forces INLINE.

DASK_STATIC_DAG is DASK, except that a static chapter (a region of missing instances all known
at plan time, with no resource cell, of at least `static_dag_node_thresh` instances) goes to
Dask as one graph (engine/scheduler.py). SLURM sits below it because it submits its static
chapters the same way, with Slurm's own dependencies, at any size.
"""

from __future__ import annotations

from enum import StrEnum

from further_dagster.errors import ExecutionModeError


class Mode(StrEnum):
    """How independent instances run."""

    INLINE = "INLINE"
    LOCAL = "LOCAL"
    LOCAL_PROCESSES = "LOCAL_PROCESSES"
    DASK = "DASK"
    DASK_STATIC_DAG = "DASK_STATIC_DAG"
    SLURM = "SLURM"


_PARENT: dict[Mode, Mode | None] = {
    Mode.INLINE: None,
    Mode.LOCAL: Mode.INLINE,
    Mode.LOCAL_PROCESSES: Mode.LOCAL,
    Mode.DASK: Mode.INLINE,
    Mode.DASK_STATIC_DAG: Mode.DASK,
    Mode.SLURM: Mode.DASK_STATIC_DAG,
}

# Modes whose backend takes a static chapter as one graph (`Backend.submit_graph`).
GRAPH_MODES = frozenset({Mode.DASK_STATIC_DAG, Mode.SLURM})


def parse_mode(value: str | Mode, *, where: str = "mode") -> Mode:
    if isinstance(value, Mode):
        return value
    try:
        return Mode(str(value).upper())
    except ValueError:
        valid = ", ".join(m.value for m in Mode)
        raise ExecutionModeError(
            f"{where}: unknown execution mode {value!r}; valid: {valid}"
        ) from None


def _ancestors(mode: Mode) -> list[Mode]:
    chain: list[Mode] = []
    current: Mode | None = mode
    while current is not None:
        chain.append(current)
        current = _PARENT[current]
    return chain


def effective_mode(
    ceiling: Mode, requested: str | Mode | None, *, in_parallel: bool = True, where: str = "cell"
) -> Mode:
    """The mode a cell runs in under `ceiling`.

    A request above the ceiling is capped to it; a request from the other branch is an error,
    since silently running a Slurm-sized cell on a thread would be worse than stopping.
    """
    if not in_parallel:
        return Mode.INLINE
    if requested is None:
        return ceiling
    wanted = parse_mode(requested, where=where)
    if wanted in _ancestors(ceiling):
        return wanted  # at or below the ceiling, same branch
    if ceiling in _ancestors(wanted):
        return ceiling  # above the ceiling in the same branch: capped
    raise ExecutionModeError(
        f"{where} asks for mode {wanted.value}, which is in another branch than the session's "
        f"ceiling {ceiling.value} (local and distributed branches do not mix). Run the session "
        f"with mode={wanted.value} or drop the cell's mode."
    )
