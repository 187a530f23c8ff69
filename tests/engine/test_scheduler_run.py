"""`run_missing` end to end on the thread pool: every instance of a wide sweep settles once,
and failures reach the caller's `on_failed` hook (then what they block) without polling."""

from __future__ import annotations

import logging
import threading

import pytest

from further_dagster import VAR, Cell, Project, ProjectParams, Req, Session, Specs
from further_dagster.engine.backends import Blocked
from further_dagster.engine.modes import Mode
from further_dagster.engine.scheduler import RunReport, run_missing
from further_dagster.errors import CellComputeError

pytestmark = pytest.mark.unit


class RunParams(ProjectParams):
    i: int = 0


sched_run = Project("sched_run", description="cells of the scheduler's run tests", params=RunParams)


class Point(Cell, project=sched_run, name="point"):
    """One point; point 3 fails."""

    class Specs(Specs):
        i: int = 0

    project_params = ("i",)
    contributions = {"value": int}

    def make(self):  # type: ignore[no-untyped-def]
        if self.specs.i == 3:
            raise ValueError("point 3 fails")
        return {"value": self.specs.i}


class Twice(Cell, project=sched_run, name="twice"):
    """Twice a point."""

    class Specs(Specs):
        i: int = 0

    project_params = ("i",)
    req_cells = {"point": Req("point")}
    contributions = {"value": int}

    def make(self):  # type: ignore[no-untyped-def]
        return {"value": 2 * self.inputs["point"].value}


class Later(Cell, project=sched_run, name="later"):
    """Depends on twice."""

    class Specs(Specs):
        i: int = 0

    project_params = ("i",)
    req_cells = {"twice": Req("twice")}
    contributions = {"value": int}

    def make(self):  # type: ignore[no-untyped-def]
        return {"value": self.inputs["twice"].value + 1}


def test_a_wide_local_sweep_settles_every_point_once(further_session: Session) -> None:
    plan = further_session.plan("sched_run.point", i=VAR([i for i in range(200) if i != 3]))
    done: list[str] = []
    threads: set[str] = set()

    def on_done(inst, outcome):  # type: ignore[no-untyped-def]
        done.append(inst.key)
        threads.add(threading.current_thread().name)

    report = run_missing(
        further_session.store, plan.missing, mode=Mode.LOCAL, max_workers=8, on_done=on_done
    )
    assert sorted(done) == sorted(report.computed) == sorted(i.key for i in plan.missing)
    assert len(done) == 199
    assert threads == {threading.current_thread().name}  # the hooks run on the caller's thread
    assert all(further_session.store.is_stored("sched_run", "point", k) for k in done)


@pytest.mark.parametrize("mode", [Mode.INLINE, Mode.LOCAL])
def test_on_failed_hears_of_a_failure_and_of_what_it_blocks(
    further_session: Session, mode: Mode, caplog: pytest.LogCaptureFixture
) -> None:
    plan = further_session.plan("sched_run.later", params={"i": 3})
    failed: list[tuple[str, BaseException]] = []
    done: list[str] = []
    report = RunReport()
    with caplog.at_level(logging.CRITICAL), pytest.raises(CellComputeError, match="point 3"):
        run_missing(
            further_session.store,
            plan.missing,
            mode=mode,
            report=report,
            on_done=lambda inst, outcome: done.append(inst.cell.name),
            on_failed=lambda inst, exc: failed.append((inst.cell.name, exc)),
        )
    assert done == []
    (name, error), *blocked = failed
    assert name == "point" and isinstance(error, CellComputeError)
    assert {name for name, _ in blocked} == {"twice", "later"} and len(blocked) == 2
    assert all(isinstance(exc, Blocked) and "blocked by" in str(exc) for _, exc in blocked)
    assert len(report.failed) == 1 and len(report.blocked) == 2
