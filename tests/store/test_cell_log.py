"""Log capture details: nesting, logger levels, and Python's last-resort stderr output."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest

from further_dagster.store.cell_log import capture_cell_log

pytestmark = pytest.mark.unit


def test_nested_captures_keep_their_own_records(tmp_path: Path) -> None:
    outer_log, inner_log = tmp_path / "outer.log", tmp_path / "inner.log"
    with capture_cell_log(outer_log, "p", "outer") as outer:
        outer.logger.info("outer before")
        with capture_cell_log(inner_log, "p", "inner") as inner:
            inner.logger.info("inner own")
            logging.getLogger("lib").warning("lib during inner")
        logging.getLogger("lib").warning("lib during outer")
    outer_text, inner_text = outer_log.read_text(), inner_log.read_text()
    assert "outer before" in outer_text and "lib during outer" in outer_text
    assert "inner own" in inner_text and "lib during inner" in inner_text
    assert "inner own" not in outer_text and "lib during inner" not in outer_text


def test_explicit_level_on_the_further_logger_wins(tmp_path: Path) -> None:
    further = logging.getLogger("further")
    old = further.level
    further.setLevel(logging.WARNING)
    try:
        with capture_cell_log(tmp_path / "c.log", "p", "c") as cap:
            cap.logger.info("quiet")
            cap.logger.warning("loud")
    finally:
        further.setLevel(old)
    text = (tmp_path / "c.log").read_text()
    assert "loud" in text and "quiet" not in text


def test_info_is_kept_by_default_and_debug_is_not(tmp_path: Path) -> None:
    with capture_cell_log(tmp_path / "c.log", "p", "c") as cap:
        cap.logger.info("info line")
        cap.logger.debug("debug line")
        cap.note(logging.INFO, "store note")
    text = (tmp_path / "c.log").read_text()
    assert "info line" in text and "store note" in text and "debug line" not in text


def test_last_resort_still_prints_when_logging_is_unconfigured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Our root handler must not silence Python's default stderr output for WARNING+."""
    monkeypatch.setattr(logging.getLogger(), "handlers", [])
    monkeypatch.setattr(logging.getLogger("lib"), "handlers", [])
    seen = threading.Event()

    def other_thread() -> None:
        logging.getLogger("lib").warning("warning from an uncaptured thread")
        seen.set()

    with capture_cell_log(tmp_path / "c.log", "p", "c") as cap:
        logging.getLogger("lib").warning("captured warning")
        cap.logger.warning("cell warning")
        thread = threading.Thread(target=other_thread)
        thread.start()
        thread.join()
    err = capsys.readouterr().err
    assert "captured warning" in err
    assert "cell warning" in err
    assert "warning from an uncaptured thread" in err
    assert err.count("captured warning") == 1
    text = (tmp_path / "c.log").read_text()
    assert "captured warning" in text and "uncaptured thread" not in text
