"""The scheduler's ready queue and bookkeeping (engine/scheduler.py `Progress`), alone."""

from pathlib import Path

import pytest

from further_dagster.engine.scheduler import Progress, RunReport
from further_dagster.errors import CellComputeError
from further_dagster.store import Outcome
from tests.engine import cells  # noqa: F401  (registers engine_demo when run alone)

pytestmark = pytest.mark.unit


def _outcome(key: str) -> Outcome:
    return Outcome(hit=False, waited=False, key=key, path=Path("."), duration_s=0.0, attempts=1)


def test_instances_become_ready_when_their_dependencies_are_done(further_session):
    plan = further_session.plan("engine_demo.sweep")
    progress = Progress(plan.missing, RunReport())
    first = progress.take_ready()
    assert sorted(i.cell.name for i in first) == ["base", "base", "base"]
    assert progress.take_ready() == []
    for inst in first[:2]:
        progress.succeeded(inst.key, _outcome(inst.key))
    assert progress.take_ready() == []  # the sweep still waits for the third base
    progress.succeeded(first[2].key, _outcome(first[2].key))
    (sweep,) = progress.take_ready()
    assert sweep.cell.name == "sweep"
    assert len(progress.report.computed) == 3


def test_a_failure_blocks_its_dependents_and_nothing_else(further_session):
    plan = further_session.plan("engine_demo.sweep")
    report = RunReport()
    progress = Progress(plan.missing, report)
    bases = progress.take_ready()
    progress.failed(bases[0].key, CellComputeError("boom"))
    for inst in bases[1:]:
        progress.succeeded(inst.key, _outcome(inst.key))
    assert progress.take_ready() == []
    sweep = plan.missing[-1]
    assert report.blocked == [sweep.key] and list(report.failed) == [bases[0].key]
    assert progress.done == progress.total == 4
