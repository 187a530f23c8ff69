"""What one Slurm task runs, and how it imports only the cells' modules.

The obvious payload, `(ensure, store, instance)` pickled by submitit, imports the cell's module
when the task unpickles it, and with it every package above that module: with the layout the
README shows (`my_project/__init__.py` calls `build_definitions`, the cells live in
`my_project/cells.py`) that is the code location, hence Dagster (~4 s per task here, against
~1 s for the cells alone). So the instance travels as bytes (`TaskPayload`), and the task
imports the cells' modules first, with each package above them that holds Dagster definitions
entered in `sys.modules` as a bare package (found on its path, never executed). A cell module
that needs something from such a package (`from my_project import X`) still works: the import
is then retried the ordinary way, at the ordinary price, with a warning saying why.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import logging
import sys
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from further_dagster.core.instances import Instance
from further_dagster.store import Outcome, Store

__all__ = ["TaskPayload", "definitions_packages", "payload_for", "run_task"]

log = logging.getLogger("further")

_STUB = "__further_bare_package__"


@dataclass(frozen=True)
class TaskPayload:
    """One task's work: the cells' modules, the packages to enter bare, the pickled
    (store, instance)."""

    modules: tuple[str, ...]
    bare: tuple[str, ...]
    data: bytes


def _holds_definitions(module: ModuleType) -> bool:
    """Does `module` hold Dagster objects (it called `build_definitions`, or imported it)?"""
    for value in list(vars(module).values()):
        owner = getattr(value, "__module__", None) if callable(value) else None
        owner = owner or type(value).__module__
        if owner.split(".")[0] == "dagster" or owner.startswith("further_dagster.dagster"):
            return True
    return False


def definitions_packages(modules: set[str]) -> tuple[str, ...]:
    """The packages above `modules` (as imported here) that hold Dagster definitions."""
    bare: list[str] = []
    for name in sorted(modules):
        parts = name.split(".")
        for depth in range(1, len(parts)):
            package = ".".join(parts[:depth])
            found = sys.modules.get(package)
            if package not in bare and found is not None and _holds_definitions(found):
                bare.append(package)
    return tuple(bare)


def payload_for(store: Store, inst: Instance, modules: set[str]) -> TaskPayload:
    import cloudpickle  # type: ignore[import-untyped]

    data = cloudpickle.dumps((store, inst))
    return TaskPayload(tuple(sorted(modules)), definitions_packages(modules), data)


def run_task(payload: TaskPayload) -> Outcome:
    """Compute (or find) the payload's instance in the shared store."""
    import pickle

    _let_preemption_pass()

    entered = _enter_bare(payload.bare)
    try:
        for name in payload.modules:
            importlib.import_module(name)
        store, inst = pickle.loads(payload.data)
    except (ImportError, AttributeError) as exc:
        if not entered:
            raise
        log.warning(
            "the cells' modules %s need their package %s itself (%s: %s): importing it, and "
            "Dagster with it; keep what cells use out of the module that calls "
            "build_definitions",
            ", ".join(payload.modules),
            ", ".join(entered),
            type(exc).__name__,
            exc,
        )
        _forget(entered)
        store, inst = pickle.loads(payload.data)
    from further_dagster.engine.compute import ensure

    return ensure(store, inst)


def _let_preemption_pass() -> None:
    """On preemption Slurm sends submitit's signal (USR2), whose handler runs `scontrol requeue`
    in the middle of make(): that child is killed by the SIGTERM the whole job gets at the same
    moment, and its error, raised in make()'s frame, would be stored as the cell's failure (the
    pool then reads a failed result of a task that was meant to run again). Here a preemption
    asks for the requeue (a failure of it only logged: with PreemptMode=REQUEUE Slurm requeues
    the job anyway) and ends the task's process at once, writing no result: the requeued task
    runs again and `ensure` takes over the killed attempt's lease. A time limit still goes to
    submitit's handler, which reports the timeout."""
    import signal
    import threading

    usr2 = getattr(signal, "SIGUSR2", None)
    if usr2 is None or threading.current_thread() is not threading.main_thread():
        return  # no Slurm signals here (a FakeSlurmClient thread, another OS)
    current = signal.getsignal(usr2)
    owner = getattr(current, "__self__", None)
    timed_out = getattr(owner, "has_timed_out", None)
    job_id = getattr(getattr(owner, "env", None), "job_id", None)
    if not callable(current) or not callable(timed_out) or not job_id:
        return  # not submitit's handler: leave it alone

    def handler(signum: int, frame: Any) -> None:
        if timed_out():
            current(signum, frame)
            return
        _preempted(str(job_id))

    signal.signal(usr2, handler)


def _preempted(job_id: str) -> None:
    import os
    import subprocess

    log.warning("Slurm job %s preempted: requeued, it runs again", job_id)
    try:
        subprocess.run(["scontrol", "requeue", job_id], check=False, timeout=10)
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("scontrol requeue %s: %s (Slurm's PreemptMode decides)", job_id, exc)
    logging.shutdown()  # flush the cell's log before the hard exit
    os._exit(143)  # no result file: the pool keeps waiting for the requeued task


def _enter_bare(packages: tuple[str, ...]) -> list[str]:
    """Enter each package not imported yet as a bare package (its path, none of its code)."""
    entered: list[str] = []
    for name in packages:
        if name in sys.modules:
            continue
        parent, _, _ = name.rpartition(".")
        # a package above is imported the ordinary way, unless it is bare too (entered first)
        path: Any = importlib.import_module(parent).__path__ if parent else None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.submodule_search_locations is None:
            continue  # not a package on the path: import it the ordinary way
        module = importlib.util.module_from_spec(spec)
        setattr(module, _STUB, True)
        sys.modules[name] = module
        entered.append(name)
    return entered


def _forget(packages: list[str]) -> None:
    """Drop the bare packages and everything imported under them."""
    for name in list(sys.modules):
        if any(name == p or name.startswith(p + ".") for p in packages):
            del sys.modules[name]
