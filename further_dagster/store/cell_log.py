"""Capture what a computation logs into its instance's `cell.log`.

Two sources end up in the file while `compute` runs:

* everything logged through the logger handed to `compute`, from any thread it starts;
* records of *other* loggers (numpy warnings, a library's progress, the author's module-level
  `logging.getLogger(__name__)`) emitted on the computing thread: a handler on the root logger
  with a thread filter catches them without catching a concurrent computation on another thread.

The logger handed to `compute` is a fresh, *unregistered* `logging.Logger` named
`further.cell.<project>.<cell>` whose parent is the registered logger of that name. Registering
one logger per key would leak a logger per key for the life of the process (the logging module
never forgets a name), and sharing the registered logger would mix two keys of one cell computed
on two threads. Records still propagate to the registered logger and to the root, so console
output and user handlers behave as usual.

When computations nest on one thread (a cell computing its dependency inline), only the
innermost capture takes records from other loggers, so each file holds its own cell's story.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

from further_dagster.store.records import open_nofollow

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(threadName)s]: %(message)s"

_MARK = "_further_cell_log"
_active = threading.local()


def _stack() -> list[int]:
    stack: list[int] | None = getattr(_active, "stack", None)
    if stack is None:
        stack = []
        _active.stack = stack
    return stack


def cell_logger_name(project: str, cell: str) -> str:
    """The logger name for a cell's records: `further.cell.<project>.<cell>`."""
    return f"further.cell.{project}.{cell}"


def _default_level(registered: logging.Logger) -> int:
    """The first explicit level among the cell's `further.*` ancestors, else INFO.

    The root's default WARNING would silently drop a cell's `logger.info`, which is the level
    authors use for progress; an explicit level a user set on `further` or below still wins.
    """
    node: logging.Logger | None = registered
    while node is not None and node.name != "root":
        if node.level != logging.NOTSET:
            return node.level
        node = node.parent
    return logging.INFO


class _ThreadRecordForwarder(logging.Handler):
    """On the root logger: forwards this thread's not-yet-captured records to the file."""

    def __init__(self, target: logging.Handler, thread_id: int) -> None:
        super().__init__(logging.NOTSET)
        self._target = target
        self._thread_id = thread_id

    def handle(self, record: logging.LogRecord) -> bool:
        _maybe_last_resort(self, record)
        if record.thread != self._thread_id or getattr(record, _MARK, None) is not None:
            return False
        stack = _stack()
        if not stack or stack[-1] != id(self._target):
            return False  # a nested capture on this thread is innermost: it takes the record
        return bool(self._target.handle(record))

    def emit(self, record: logging.LogRecord) -> None:  # pragma: no cover - handle() forwards
        self._target.emit(record)


def _is_ours(handler: logging.Handler) -> bool:
    return isinstance(handler, (_ThreadRecordForwarder, _MarkingFileHandler))


def _maybe_last_resort(forwarder: _ThreadRecordForwarder, record: logging.LogRecord) -> None:
    """Keep `logging.lastResort` working while our handlers sit on the root logger.

    Without any handler configured, Python prints WARNING+ records to stderr through
    `logging.lastResort`; our handlers would count as "configured" and silence that for every
    thread. So the first of our forwarders on the root prints such a record itself when no
    handler of the user's would see it.
    """
    last_resort = logging.lastResort
    if last_resort is None or record.levelno < last_resort.level:
        return
    root = logging.getLogger()
    first = next((h for h in root.handlers if isinstance(h, _ThreadRecordForwarder)), None)
    if first is not forwarder:
        return
    found = logging.Logger.manager.loggerDict.get(record.name)
    node: logging.Logger | None = found if isinstance(found, logging.Logger) else root
    while node is not None:
        if any(not _is_ours(h) for h in node.handlers):
            return
        if not node.propagate:
            return
        node = node.parent
    last_resort.handle(record)


class _MarkingFileHandler(logging.FileHandler):
    """The file handler: marks records it wrote so the root forwarder does not write them twice.

    The log is opened with `O_NOFOLLOW`: a `cell.log` that is a symlink is refused, never
    appended to wherever it points.
    """

    def _open(self) -> Any:
        fd = open_nofollow(self.baseFilename, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        return os.fdopen(fd, "a", encoding=self.encoding, errors=self.errors)

    def handle(self, record: logging.LogRecord) -> bool:
        if getattr(record, _MARK, None) is not None:
            return False
        setattr(record, _MARK, id(self))
        return bool(super().handle(record))


class CellLog:
    """An open capture: `logger` for the computation and `note()` for the store's own lines."""

    def __init__(self, logger: logging.Logger, handler: logging.Handler) -> None:
        self.logger = logger
        self._handler = handler

    def note(
        self,
        level: int,
        message: str,
        exc_info: tuple[type[BaseException], BaseException, TracebackType | None] | None = None,
    ) -> None:
        """Write one line to `cell.log` only (not propagated to the console)."""
        record = self.logger.makeRecord(
            self.logger.name, level, "(further store)", 0, message, (), exc_info
        )
        self._handler.handle(record)


@contextmanager
def capture_cell_log(path: Path, project: str, cell: str) -> Iterator[CellLog]:
    """Append this thread's logging (and everything sent to the cell logger) to `path`."""
    name = cell_logger_name(project, cell)
    registered = logging.getLogger(name)
    logger = logging.Logger(name, _default_level(registered))
    logger.parent = registered
    handler = _MarkingFileHandler(path, mode="a", encoding="utf-8")
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    forwarder = _ThreadRecordForwarder(handler, threading.get_ident())
    logger.addHandler(handler)
    root = logging.getLogger()
    root.addHandler(forwarder)
    stack = _stack()
    stack.append(id(handler))
    try:
        yield CellLog(logger, handler)
    finally:
        stack.pop()
        root.removeHandler(forwarder)
        logger.removeHandler(handler)
        handler.close()


def current_exc_info() -> tuple[type[BaseException], BaseException, TracebackType | None] | None:
    """`sys.exc_info()` narrowed for `CellLog.note` (None outside an except block)."""
    info: Any = sys.exc_info()
    return info if info[0] is not None else None
