"""What is missing (engine/plan.py): one rule for the Session, steps, executor and sensor."""

import pytest

from further_dagster import Session
from further_dagster.engine.compute import ensure
from further_dagster.engine.plan import missing, plan_for
from tests.engine.cells import engine_demo  # noqa: F401 - defines the cells

pytestmark = pytest.mark.unit


def test_everything_under_an_unstored_target_that_is_not_stored_is_missing(further_session):
    plan = further_session.plan("engine_demo.sweep")
    names = [i.cell.name for i in plan.missing]
    assert names == ["base", "base", "base", "sweep"]  # dependencies first
    assert plan.stored == []


def test_a_stored_target_needs_nothing_below_it(further_session):
    session: Session = further_session
    session.call("engine_demo.scaled")
    plan = session.plan("engine_demo.scaled")
    (base,) = [i for i in plan.instances if i.cell.name == "base"]
    # the upstream result is gone, but the target is stored: nothing is needed
    import shutil

    shutil.rmtree(session.store.instance_dir("engine_demo", "base", base.key))
    assert missing(session.store, plan.roots) == []
    assert session.plan("engine_demo.scaled").missing == []
    # asking for the upstream itself finds it missing
    assert [i.key for i in missing(session.store, [base])] == [base.key]


def test_only_the_unstored_part_of_a_graph_is_missing(further_session):
    session: Session = further_session
    plan = session.plan("engine_demo.sweep")
    first_base = plan.missing[0]
    ensure(session.store, first_base)
    again = plan_for(session.store, plan.roots)
    assert first_base.key not in {i.key for i in again.missing}
    assert len(again.missing) == 3 and [i.key for i in again.stored] == [first_base.key]
