"""Session.call: memoization, sweeps, modes, failures, progress."""

import logging
import threading

import pytest

from further_dagster import VAR, Cell, Project, Req, Session, Specs
from further_dagster.errors import CellComputeError, ExecutionModeError
from tests.engine.cells import engine_demo

pytestmark = pytest.mark.unit


def test_second_call_computes_nothing(further_session, calls):
    first = further_session.call("engine_demo.scaled")
    assert first.values == [0.0, 2.0, 4.0] and first.total == 6.0
    assert calls.count() == 2
    assert len(further_session.last_report.computed) == 2
    again = further_session.call("engine_demo.scaled")
    assert calls.count() == 2
    assert again.key == first.key and again.to_dict() == first.to_dict()
    assert further_session.last_report.computed == []


def test_a_new_session_reuses_the_store(further_tmp_root, calls):
    Session(root=further_tmp_root, progress=False).call("engine_demo.scaled")
    Session(root=further_tmp_root, progress=False).call("engine_demo.scaled", factor=2.0)
    assert calls.count() == 2


def test_opts_never_recompute(further_session, calls):
    further_session.call("engine_demo.base")
    further_session.call("engine_demo.base", opts={"engine_demo.base": {"verbose": True}})
    assert calls.count("base") == 1


def test_changed_spec_recomputes_only_the_affected_subgraph(further_session, calls):
    further_session.call("engine_demo.scaled")
    further_session.call("engine_demo.scaled", factor=3.0)
    assert calls.count("base") == 1 and calls.count("scaled") == 2
    further_session.call("engine_demo.scaled", specs={"engine_demo.base": {"n": 5}})
    assert calls.count("base") == 2 and calls.count("scaled") == 3


def test_session_var_sweep_returns_one_result_per_point(further_session, calls):
    results = further_session.call("engine_demo.scaled", factor=VAR([1.0, 2.0, 3.0]))
    assert [r.total for r in results] == [3.0, 6.0, 9.0]
    # the shared upstream instance resolves to one key and computes once
    assert calls.count("base") == 1 and calls.count("scaled") == 3


def test_cartesian_product_of_session_vars(further_session, calls):
    results = further_session.call(
        "engine_demo.scaled", factor=VAR([1.0, 2.0]), params={"seed": VAR([0, 10])}
    )
    assert len(results) == 4
    assert sorted(r.total for r in results) == [3.0, 6.0, 33.0, 66.0]
    assert calls.count("base") == 2 and calls.count("scaled") == 4


def test_var_on_an_edge_gives_the_caller_a_list(further_session, calls):
    result = further_session.call("engine_demo.sweep")
    assert result.sizes == [1, 2, 3]
    assert calls.count("base") == 3
    # the same instances are reused by a session call that reaches them
    further_session.call("engine_demo.base", n=2)
    assert calls.count("base") == 3


def test_plan_shows_what_would_run(further_session):
    plan = further_session.plan("engine_demo.sweep")
    assert len(plan.instances) == 4 and len(plan.missing) == 4
    further_session.call("engine_demo.sweep")
    assert further_session.plan("engine_demo.sweep").missing == []


def _parallel_project(name):
    p = Project(name)
    barrier = threading.Barrier(2, timeout=2)

    class Left(Cell, project=p):
        contributions = {"thread": str}

        def make(self):
            barrier.wait()  # only passes if the other instance runs at the same time
            return {"thread": threading.current_thread().name}

    class Right(Cell, project=p):
        contributions = {"thread": str}

        def make(self):
            barrier.wait()
            return {"thread": threading.current_thread().name}

    class Join(Cell, project=p):
        req_cells = {"l": Req("left"), "r": Req("right")}
        contributions = {"threads": list}

        def make(self):
            return {"threads": [self.inputs["l"].thread, self.inputs["r"].thread]}

    return p, Left, Right


def test_local_mode_runs_independent_instances_in_parallel(further_tmp_root):
    _parallel_project("engine_parallel")
    session = Session(root=further_tmp_root, mode="LOCAL", progress=False)
    result = session.call("engine_parallel.join")
    assert all(t.startswith("further") for t in result.threads)


def test_inline_mode_runs_one_at_a_time(further_tmp_root):
    _parallel_project("engine_inline")
    session = Session(root=further_tmp_root, mode="INLINE", progress=False)
    with pytest.raises(CellComputeError, match="BrokenBarrierError"):
        session.call("engine_inline.join")


def test_in_parallel_false_forces_inline(further_tmp_root):
    p, left, right = _parallel_project("engine_optout")
    left.in_parallel = False
    right.in_parallel = False
    session = Session(root=further_tmp_root, mode="LOCAL", progress=False)
    with pytest.raises(CellComputeError, match="BrokenBarrierError"):
        session.call("engine_optout.join")
    state = session.store.read_state(
        "engine_optout", "left", session.plan("engine_optout.left").roots[0].key
    )
    assert state is not None and state.status == "failed"


def test_a_cell_mode_across_branches_is_refused(further_tmp_root):
    p = Project("engine_branch")

    class OnDask(Cell, project=p):
        mode = "DASK"
        contributions = {"v": int}

        def make(self):
            return {"v": 1}

    session = Session(root=further_tmp_root, mode="LOCAL", progress=False)
    with pytest.raises(ExecutionModeError, match="another branch"):
        session.call("engine_branch.on_dask")


def test_failure_keeps_everything_else_and_retries_next_call(further_tmp_root, tmp_path):
    p = Project("engine_fail")
    flag = tmp_path / "fixed"

    class Good(Cell, project=p):
        contributions = {"v": int}

        def make(self):
            return {"v": 1}

    class Flaky(Cell, project=p):
        contributions = {"v": int}

        def make(self):
            if not flag.exists():
                raise RuntimeError("disk on fire")
            return {"v": 2}

    class Top(Cell, project=p):
        req_cells = {"g": Req("good"), "f": Req("flaky")}
        contributions = {"v": int}

        def make(self):
            return {"v": self.inputs["g"].v + self.inputs["f"].v}

    session = Session(root=further_tmp_root, mode="LOCAL", progress=False)
    with pytest.raises(CellComputeError, match="disk on fire") as err:
        session.call("engine_fail.top")
    assert "1 blocked" in str(err.value)
    assert "Traceback" in err.value.remote_traceback
    assert "RuntimeError: disk on fire" in err.value.remote_traceback
    report = session.last_report
    assert len(report.computed) == 1 and len(report.failed) == 1 and len(report.blocked) == 1
    plan = session.plan("engine_fail.top")
    assert [i.cell.name for i in plan.missing] == ["flaky", "top"]
    flag.touch()
    assert session.call("engine_fail.top").v == 3
    assert [i.cell.name for i in session.plan("engine_fail.top").missing] == []


def test_progress_is_logged(further_session, caplog):
    with caplog.at_level(logging.INFO, logger="further"):
        further_session.call("engine_demo.sweep")
    messages = [r.getMessage() for r in caplog.records if r.name == "further"]
    assert any("4 instance(s), 0 stored, 4 to compute" in m for m in messages)
    assert any(m.startswith("computed engine_demo.sweep@") and "[4/4]" in m for m in messages)


def test_cell_log_is_captured_in_the_artifact_directory(further_tmp_root):
    p = Project("engine_log")

    class Chatty(Cell, project=p):
        contributions = {"v": int}

        def make(self):
            self.log.info("hello from make")
            logging.getLogger("some.library").warning("library warning")
            return {"v": 1}

    session = Session(root=further_tmp_root, progress=False)
    result = session.call("engine_log.chatty")
    log = (session.store.instance_dir("engine_log", "chatty", result.key) / "cell.log").read_text()
    assert "hello from make" in log and "library warning" in log


def test_extra_files_in_artifact_dir_are_committed(further_tmp_root):
    p = Project("engine_files")

    class Writer(Cell, project=p):
        contributions = {"name": str}

        def make(self):
            (self.artifact_dir / "figure.txt").write_text("plot")
            return {"name": "figure.txt"}

    session = Session(root=further_tmp_root, progress=False)
    result = session.call("engine_files.writer")
    result_dir = session.store.instance_dir("engine_files", "writer", result.key) / "result"
    assert (result_dir / "figure.txt").read_text() == "plot"


def test_local_processes_mode(further_tmp_root, calls):
    session = Session(root=further_tmp_root, mode="LOCAL_PROCESSES", max_workers=2, progress=False)
    result = session.call("engine_demo.sweep")
    assert result.sizes == [1, 2, 3]
    import os

    assert {c[2] for c in calls.read() if c[0] == "base"} - {str(os.getpid())}


def test_specs_of_a_swept_result_are_readable(further_session):
    results = further_session.call("engine_demo.base", n=VAR([1, 2]))
    assert [r.specs.n for r in results] == [1, 2]
    assert isinstance(results[0].specs, Specs)
    assert engine_demo.cell("base") is not None


def test_repeated_calls_notice_a_redefined_cell(further_tmp_root):
    p = Project("engine_redefine")

    def define(version, value):
        class Value(Cell, project=p):
            logic_version = version
            contributions = {"v": int}

            def make(self):
                return {"v": value}

        return Value

    session = Session(root=further_tmp_root, progress=False)
    define(1, 1)
    assert session.call("engine_redefine.value").v == 1
    assert session.call("engine_redefine.value").v == 1  # the reused plan
    define(2, 2)  # a notebook re-runs the edited class with a bumped version
    assert session.call("engine_redefine.value").v == 2
    cls = define(3, 3)
    assert session.call("engine_redefine.value").v == 3
    cls.logic_version = 4  # edited in place
    assert session.plan("engine_redefine.value").missing != []
