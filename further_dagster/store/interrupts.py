"""The attempts running in this process, and what stops them: signals and an abandoned Session.

An attempt registers itself here while it runs. Two things can stop it from outside its thread:

* `interrupt(instance_dir, reason)`: a Session whose caller pressed Ctrl-C abandons the make()
  threads it cannot kill; the attempt is recorded as `interrupted`, its lease is released at
  once (so another process may compute the key), and whatever its make() returns later is
  discarded;
* SIGTERM or SIGHUP, when nobody else handles them: `install_signal_handlers()` (from the main
  thread; a no-op elsewhere and where a handler is already installed) records every running
  attempt as `interrupted`, releases its lease, then restores the default action and re-sends
  the signal, so the process ends exactly as the signal would have ended it, without making
  anyone wait for its lease. Python runs the handler between bytecodes of the main thread: a
  signal that arrives during one long C call takes effect when the call returns.

The registry is a plain dict, read without a lock by the signal handler (which may run while
the main thread is inside `register`), so no handler can deadlock on it.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from types import FrameType
from typing import Protocol

log = logging.getLogger("further.store")

HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class Interruptible(Protocol):
    """A running attempt, as this module sees it."""

    def interrupt(self, reason: str, *, from_signal: bool = False) -> bool:
        """Record `interrupted`, release the lease, discard what compute returns later."""
        ...


_running: dict[str, Interruptible] = {}
_installed = False


def register(instance_dir: str, attempt: Interruptible) -> None:
    """`attempt` runs in this process for `instance_dir` (at most one per directory)."""
    _running[instance_dir] = attempt


def unregister(instance_dir: str, attempt: Interruptible) -> None:
    """`attempt` finished; forget it (if it is still the one registered)."""
    if _running.get(instance_dir) is attempt:
        _running.pop(instance_dir, None)


def interrupt(instance_dir: str, reason: str) -> bool:
    """Interrupt the attempt a thread of this process runs for `instance_dir`; False if none."""
    attempt = _running.get(instance_dir)
    if attempt is None:
        return False
    return attempt.interrupt(reason)


def install_signal_handlers() -> None:
    """Release leases on SIGTERM/SIGHUP before dying of them (main thread only; idempotent).

    Leaves alone a signal whose handler is not the default one: an application (Dagster, Dask,
    a web server) that handles it decides what happens, and the lease then expires or is
    released by the exception its handler raises.
    """
    global _installed
    if _installed or threading.current_thread() is not threading.main_thread():
        return
    _installed = True
    for signum in HANDLED_SIGNALS:
        try:
            if signal.getsignal(signum) is signal.SIG_DFL:
                signal.signal(signum, _on_signal)
        except (OSError, ValueError):  # pragma: no cover - embedded interpreters
            pass


def _on_signal(signum: int, frame: FrameType | None) -> None:
    # A second SIGTERM (a pool terminating its workers twice) must not cut the cleanup short:
    # ignore repeats for the few milliseconds it takes, then die of the signal.
    signal.signal(signum, signal.SIG_IGN)
    name = signal.Signals(signum).name
    for attempt in list(_running.values()):
        try:
            attempt.interrupt(f"the process received {name}", from_signal=True)
        except BaseException as exc:  # noqa: BLE001 - dying anyway: release what we can
            log.error("could not release a lease on %s: %s", name, exc)
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


__all__ = [
    "HANDLED_SIGNALS",
    "Interruptible",
    "install_signal_handlers",
    "interrupt",
    "register",
    "unregister",
]
