"""Is the process that holds a lease still alive? Only its own machine can say, and cheaply.

A lock records its holder's host, pid, and on Linux the *machine* its pid is valid in
(`<boot id>/<pid namespace>`) and the process's start time. A waiter on the same machine asks
the kernel (`/proc/<pid>/stat`): no such process, a zombie, or a process started at another time
(the pid was reused) means the holder is dead and its lease can be taken over at once, instead
of after the whole lease (a kill -9 of a notebook kernel, an OOM kill, a crashed job).
Anywhere else (another host, another container, another boot) nothing is known, and the lease
expires by its heartbeat as before. Facts about this process are read once per process.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

from further_dagster.store.provenance import hostname

_BOOT_ID = "/proc/sys/kernel/random/boot_id"


@dataclass(frozen=True, slots=True)
class ProcessStat:
    """What `/proc/<pid>/stat` says of a process: its state letter and its start time."""

    state: str
    started: int


@functools.cache
def machine() -> str | None:
    """`<boot id>/<pid namespace>` of this process, or None where /proc does not tell."""
    try:
        with open(_BOOT_ID, encoding="ascii") as fh:
            boot = fh.read().strip()
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        return None
    return f"{boot}/{namespace}" if boot else None


def process_stat(pid: int) -> ProcessStat | None:
    """The state and start time of `pid`, or None if there is no such process (or no /proc)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read()
    except OSError:
        return None
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses; split after the last ")".
    fields = data[data.rfind(b")") + 2 :].split()
    try:
        return ProcessStat(state=fields[0].decode("ascii"), started=int(fields[19]))
    except (IndexError, ValueError, UnicodeDecodeError):
        return None


@functools.cache
def own_start_time() -> int | None:
    """This process's start time in clock ticks since boot (None without /proc)."""
    found = process_stat(os.getpid())
    return found.started if found is not None else None


def holder_is_dead(host: str, pid: int, holder_machine: str | None, started: int | None) -> bool:
    """True only when this machine can prove the holder is gone: same host and same machine,
    and its pid is absent, a zombie, or belongs to a process started at another time.

    False means "alive or unknown" (another host, another pid namespace, no /proc).
    """
    if host != hostname() or pid <= 0:
        return False
    here = machine()
    if here is not None:
        if holder_machine != here:
            return False  # another boot or container with the same host name: cannot tell
        found = process_stat(pid)
        if found is None:
            return os.path.isdir("/proc/self")  # /proc works, so the pid is really gone
        if found.state in ("Z", "X"):
            return True
        return started is not None and found.started != started
    if holder_machine is not None:
        return False  # written on a Linux machine, read where /proc is missing
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # PermissionError: alive, owned by someone else
        return False
    return False


# A forked child is another process: it must not present its parent's start time.
os.register_at_fork(after_in_child=own_start_time.cache_clear)


__all__ = ["ProcessStat", "holder_is_dead", "machine", "own_start_time", "process_stat"]
