"""Engine mode DASK: a Session computes the missing instances as tasks on a local cluster."""

import pytest

from further_dagster import Session
from tests.engine import cells  # noqa: F401  (registers engine_demo)

pytestmark = pytest.mark.unit


def test_session_in_dask_mode_computes_each_instance_once(further_tmp_root, calls):
    session = Session(mode="DASK", max_workers=2, progress=False)
    result = session.call("engine_demo.sweep")
    assert result.sizes == [1, 2, 3]
    assert calls.count("base") == 3 and calls.count("sweep") == 1
    # the instances ran in Dask worker processes, not in this one
    import os

    assert {int(c[2]) for c in calls.read()} - {os.getpid()}
    again = session.call("engine_demo.sweep")
    assert again.sizes == [1, 2, 3] and calls.count() == 4


# --- DASK_STATIC_DAG ------------------------------------------------------------------------


def _static_run(session, roots, mode, caplog):
    """run_missing over the missing instances of `roots`; (report or error, graph sizes)."""
    import logging

    from further_dagster.engine import run_missing
    from further_dagster.errors import CellComputeError

    missing: dict[str, object] = {}
    for root in roots:
        missing.update((i.key, i) for i in session.plan(root).missing)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="further"):
        try:
            report = run_missing(session.store, list(missing.values()), mode=mode, max_workers=2)
        except CellComputeError as exc:
            report = exc
    graphs = [
        int(r.getMessage().split()[5]) for r in caplog.records if "static chapter" in r.getMessage()
    ]
    return report, graphs


def _stored(session, cell, key):
    return session.store.is_stored("static_demo", cell, key)


@pytest.mark.parametrize("mode", ["DASK", "DASK_STATIC_DAG"])
def test_a_static_chapter_fails_only_what_depends_on_the_failure(
    further_tmp_root, calls, caplog, monkeypatch, mode
):
    """One leaf fails: its mid and the gather over every mid are blocked; every other leaf,
    mid and the gather over the good mids are stored. DASK_STATIC_DAG sends the whole region
    as one graph and ends in the same state as DASK's instance-by-instance path."""
    from tests.engine.static_cells import Good, Top

    monkeypatch.setenv("FURTHER_STATIC_DAG_NODE_THRESH", "5")
    session = Session(progress=False)
    failed, graphs = _static_run(session, [Top, Good], mode, caplog)
    assert "leaf refuses k=3" in str(failed)
    assert "1 instance(s) failed, 2 blocked" in str(failed)
    assert graphs == ([6 + 3 + 2] if mode == "DASK_STATIC_DAG" else [])
    plan = session.plan(Good)
    assert plan.missing == []  # the good gather and all it needs are stored
    assert calls.count("top") == 0 and calls.count("good") == 1
    assert calls.count("leaf") == 6 and calls.count("mid") == 2
    top = session.plan(Top)
    assert [i.cell.name for i in top.missing] == ["leaf", "mid_b", "top"]


def test_a_chapter_below_the_threshold_runs_as_in_dask(
    further_tmp_root, calls, caplog, monkeypatch
):
    from tests.engine.static_cells import Good

    monkeypatch.setenv("FURTHER_STATIC_DAG_NODE_THRESH", "100")
    session = Session(progress=False)
    report, graphs = _static_run(session, [Good], "DASK_STATIC_DAG", caplog)
    assert graphs == [] and len(report.computed) == 8
    assert session.plan(Good).missing == []


def test_an_inline_cell_splits_the_run_into_two_chapters(
    further_tmp_root, calls, caplog, monkeypatch
):
    """`Pause` runs INLINE here: the region above it becomes a chapter of its own once it is
    stored, and what was stored before the run is never submitted."""
    from tests.engine.static_cells import Good, Last

    monkeypatch.setenv("FURTHER_STATIC_DAG_NODE_THRESH", "1")
    session = Session(progress=False)
    session.call(Good)  # stored first: the first chapter is only what is still missing
    calls_before = calls.count()
    report, graphs = _static_run(session, [Last], "DASK_STATIC_DAG", caplog)
    assert graphs == [3 + 1]  # after(j=1..3) + last; pause ran inline, good was stored
    assert len(report.computed) == 5 and calls.count() == calls_before + 5
    assert calls.count("pause") == 1
    again = Session(mode="DASK_STATIC_DAG", progress=False).call(Last)
    good = (0 + 1 + 2) + (4 + 5)
    assert again.total == 3 * good + 6 and calls.count() == calls_before + 5


def test_dask_static_dag_sits_between_dask_and_slurm() -> None:
    from further_dagster.engine.modes import Mode, effective_mode
    from further_dagster.errors import ExecutionModeError

    assert effective_mode(Mode.SLURM, "DASK_STATIC_DAG") is Mode.DASK_STATIC_DAG
    assert effective_mode(Mode.DASK_STATIC_DAG, "SLURM") is Mode.DASK_STATIC_DAG  # capped
    assert effective_mode(Mode.DASK_STATIC_DAG, "DASK") is Mode.DASK
    with pytest.raises(ExecutionModeError, match="another branch"):
        effective_mode(Mode.LOCAL, "DASK_STATIC_DAG")


def test_the_threshold_is_a_validated_setting() -> None:
    from further_dagster import settings
    from further_dagster.errors import ConfigurationError

    assert settings.static_dag_node_thresh() == 50
    assert settings.static_dag_node_thresh(environ={"FURTHER_STATIC_DAG_NODE_THRESH": "7"}) == 7
    with pytest.raises(ConfigurationError, match="FURTHER_STATIC_DAG_NODE_THRESH='0'"):
        settings.static_dag_node_thresh(environ={"FURTHER_STATIC_DAG_NODE_THRESH": "0"})
    with pytest.raises(ConfigurationError, match="static_dag_node_thresh=True"):
        settings.static_dag_node_thresh(True)
