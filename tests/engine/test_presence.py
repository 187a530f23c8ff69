"""A plan's "stored?" lookups (engine/presence.py): the answers of one stat per instance, in
fewer stats when a cell is mostly not stored."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from further_dagster import VAR, Cell, Project, Req, Session, Specs
from further_dagster.engine.plan import is_stored
from further_dagster.engine.presence import PROBE, StoredLookup
from further_dagster.store import layout

pytestmark = pytest.mark.unit


@pytest.fixture
def sweep(further_registry: Any) -> type[Cell]:
    """pres.point(i) <- pres.source: a sweep over one shared upstream."""
    project = Project("pres", description="a sweep")

    class Source(Cell, project=project, name="source"):
        """The shared upstream."""

        contributions = {"v": int}

        def make(self) -> dict[str, Any]:
            return {"v": 1}

    class Point(Cell, project=project, name="point"):
        """One point."""

        class Specs(Specs):
            i: int = 0

        req_cells = {"source": Req("source")}
        contributions = {"v": int}

        def make(self) -> dict[str, Any]:
            return {"v": self.specs.i}

    return Point


def _mark_stored(root: Path, inst: Any) -> None:
    """What `is_stored` looks for: the committed result directory."""
    cell = inst.cell
    os.makedirs(layout.result_dir_str(str(root), cell.project.name, cell.name, inst.key))


def _counting(session: Session, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    asked: list[str] = []
    real = session.store.is_stored

    def counted(project: str, cell: str, key: str) -> bool:
        asked.append(key)
        return real(project, cell, key)

    monkeypatch.setattr(session.store, "is_stored", counted)
    return asked


def test_a_new_sweep_is_planned_in_a_few_stats_and_misses_every_point(
    sweep: type[Cell], further_tmp_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    session = Session(root=further_tmp_root, progress=False)
    asked = _counting(session, monkeypatch)
    plan = session.plan("pres.point", i=VAR(range(10 * PROBE)))
    assert len(plan.missing) == 10 * PROBE + 1  # every point and the source
    assert len(asked) <= PROBE + 1  # the probe, then one listing of a missing directory


def test_a_partly_stored_cell_is_judged_as_one_stat_per_instance_judges_it(
    sweep: type[Cell], further_tmp_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    session = Session(root=further_tmp_root, progress=False)
    points = session.plan("pres.point", i=VAR(range(6 * PROBE))).roots
    stored = points[-5:] + points[PROBE : PROBE + 3]  # after the probe, and one in it
    stored.append(points[2])
    for inst in stored:
        _mark_stored(further_tmp_root, inst)
    (further_tmp_root / "pres" / "point" / points[PROBE + 10].key).mkdir()  # no result in it

    reference = {i.key for i in points if not is_stored(session.store, i)}
    fresh = Session(root=further_tmp_root, progress=False)
    asked = _counting(fresh, monkeypatch)
    plan = fresh.plan("pres.point", i=VAR(range(6 * PROBE)))
    assert {i.key for i in plan.missing if i.cell is sweep} == reference
    assert len(reference) == 6 * PROBE - len(stored)
    # the probe, then a stat only of the listed keys after it (stored, or a directory)
    assert len(asked) < PROBE + len(stored) + 3


def test_a_mostly_stored_cell_keeps_one_stat_per_lookup(
    sweep: type[Cell], further_tmp_root: Path
) -> None:
    session = Session(root=further_tmp_root, progress=False)
    points = session.plan("pres.point", i=VAR(range(2 * PROBE))).roots
    for inst in points[: PROBE + 4]:
        _mark_stored(further_tmp_root, inst)
    lookup = StoredLookup()
    answers = [lookup(session.store, i) for i in points]
    assert answers == [is_stored(session.store, i) for i in points]
    assert answers.count(True) == PROBE + 4
    # listing a directory of stored results would save no stat: it was never listed
    assert lookup._listed == {}


def test_a_sweep_extended_far_past_its_stored_points_is_listed_later(
    sweep: type[Cell], further_tmp_root: Path
) -> None:
    session = Session(root=further_tmp_root, progress=False)
    points = session.plan("pres.point", i=VAR(range(8 * PROBE))).roots
    for inst in points[:PROBE]:
        _mark_stored(further_tmp_root, inst)
    lookup = StoredLookup()
    answers = [lookup(session.store, i) for i in points]
    assert answers == [True] * PROBE + [False] * (7 * PROBE)
    # all stored at the first judgement (PROBE lookups), mostly missing at a later one
    assert set(lookup._listed) == {("pres", "point")}


def test_a_store_that_is_not_an_artifact_store_is_asked_every_time(
    sweep: type[Cell], further_tmp_root: Path
) -> None:
    session = Session(root=further_tmp_root, progress=False)
    points = session.plan("pres.point", i=VAR(range(2 * PROBE))).roots

    class Remote:
        """Any other `Store`: its own is_stored, however it answers."""

        def __init__(self) -> None:
            self.asked = 0

        def is_stored(self, project: str, cell: str, key: str) -> bool:
            self.asked += 1
            return key == points[-1].key

    remote = Remote()
    lookup = StoredLookup()
    answers = [lookup(remote, i) for i in points]  # type: ignore[arg-type]
    assert answers == [False] * (2 * PROBE - 1) + [True]
    assert remote.asked == 2 * PROBE
