"""The engine's Slurm pool against `FakeSlurmClient`: arrays per wave, failures, jobs Slurm
ended without a result, fallbacks and cancellation, with no cluster. Each task's
`run_task` runs in a thread of this process; tests/slurm runs the same on a real Slurm."""

from __future__ import annotations

import concurrent.futures as cf
from pathlib import Path
from typing import Any

import pytest

from further_dagster import VAR, Cell, Project, ProjectParams, Req, Session, Specs
from further_dagster.core.instances import Instance
from further_dagster.engine import Mode, run_missing
from further_dagster.engine.backends.slurm import SlurmPool, SlurmSettings, Submission
from further_dagster.errors import CellComputeError, SlurmJobError, SlurmSubmissionError
from further_dagster.slurm import Dependency, SlurmClient, SlurmSpec, states
from further_dagster.testing.slurm import FakeSlurmClient

pytestmark = pytest.mark.unit

project = Project("slurm_backend_demo")


class Leaf(Cell, project=project):
    class Specs(Specs):
        k: int = 1

    slurm = SlurmSpec(partition="debug", time_min=20)
    contributions = {"v": int}

    def make(self) -> dict[str, Any]:
        if self.specs.k < 0:
            raise ValueError(f"leaf refuses k={self.specs.k}")
        return {"v": self.specs.k * 10}


class Gather(Cell, project=project):
    req_cells = {"leaves": Req("leaf", k=VAR([1, 2, 3]))}
    contributions = {"total": int}

    def make(self) -> dict[str, Any]:
        return {"total": sum(leaf.v for leaf in self.inputs["leaves"])}


class FlakyGather(Cell, project=project):
    req_cells = {"leaves": Req("leaf", k=VAR([1, -2, 3]))}
    contributions = {"total": int}

    def make(self) -> dict[str, Any]:
        return {"total": 0}


class OnGpu(Cell, project=project):
    slurm = [SlurmSpec(partition="gpu", gpus=1), SlurmSpec(partition="debug", gpus=0)]
    contributions = {"x": int}

    def make(self) -> dict[str, Any]:
        return {"x": 1}


@pytest.fixture
def session(further_tmp_root: Path) -> Session:
    return Session(root=further_tmp_root, progress=False)


def settings(client: FakeSlurmClient, **overrides: Any) -> SlurmSettings:
    return SlurmSettings(client=client, poll_s=0.01, state_every_s=0.02, **overrides)


def leaves(session: Session, root: type = Gather) -> list[Instance]:
    return [i for i in session.plan(root).missing if i.cell is Leaf]


def test_the_fake_is_a_slurm_client() -> None:
    assert isinstance(FakeSlurmClient(), SlurmClient)


def test_each_wave_of_ready_instances_is_one_array(session: Session) -> None:
    client = FakeSlurmClient()
    seen: list[Submission] = []
    missing = session.plan(Gather).missing
    report = run_missing(
        session.store, missing, mode=Mode.SLURM, slurm=settings(client, on_submit=seen.append)
    )
    assert len(report.computed) == 4
    # wave 1: the three leaves, one array; wave 2: the gather that needs them, one job
    assert [(s.job_name, len(s.calls), s.array) for s in client.submissions] == [
        ("further-leaf", 3, True),
        ("further-gather", 1, False),
    ]
    assert client.submissions[0].job_ids == ("1000_0", "1000_1", "1000_2")
    assert client.submissions[0].spec == SlurmSpec(partition="debug", time_min=20)
    assert [(s.cell, s.job_ids) for s in seen] == [
        ("slurm_backend_demo.leaf", ["1000_0", "1000_1", "1000_2"]),
        ("slurm_backend_demo.gather", ["1001"]),
    ]
    gathered: Any = session.call(Gather)
    assert gathered.total == 60  # stored: computed by the fake's jobs


def test_one_sbatch_per_instance_without_arrays(session: Session) -> None:
    client = FakeSlurmClient()
    pool = SlurmPool(session.store, settings(client, array=False))
    try:
        futures = pool.submit_many(leaves(session))
        assert [f.result(timeout=10).hit for f in futures] == [False, False, False]
    finally:
        pool.shutdown()
    assert [s.job_ids for s in client.submissions] == [("1000",), ("1001",), ("1002",)]
    assert pool.submissions == [["1000"], ["1001"], ["1002"]]
    assert pool.job_ids() == ["1000", "1001", "1002"]


def test_a_failing_array_task_keeps_the_others(session: Session) -> None:
    client = FakeSlurmClient()
    flaky = leaves(session, FlakyGather)
    with pytest.raises(CellComputeError) as failed:
        run_missing(session.store, flaky, mode=Mode.SLURM, slurm=settings(client))
    assert "leaf refuses k=-2" in failed.value.remote_traceback
    assert "failed in Slurm job 1000_1" in str(failed.value)
    assert "Remote traceback" in str(failed.value) and "1000_1_0_log.err" in str(failed.value)
    stored: list[Any] = []
    for inst in flaky:
        if session.store.is_stored(project.name, "leaf", inst.key):
            stored.append(inst.specs.model_dump()["k"])
    assert stored == [1, 3]
    assert client.state("1000_1") == "FAILED" and client.state("1000") == "FAILED"


@pytest.mark.parametrize("state", ["TIMEOUT", "OUT_OF_MEMORY", "CANCELLED", "NODE_FAIL"])
def test_a_task_slurm_ended_without_a_result_names_the_job_and_its_logs(
    session: Session, state: str
) -> None:
    client = FakeSlurmClient(run=False)
    pool = SlurmPool(session.store, settings(client))
    try:
        futures = pool.submit_many(leaves(session))
        client.set_state("1000_1", state)  # killed before it ran: it writes no result
        client.start()
        done, _ = cf.wait(futures, timeout=10)
        assert len(done) == 3
    finally:
        pool.shutdown()
    assert futures[0].result().hit is False and futures[2].result().hit is False
    error = futures[1].exception()
    assert isinstance(error, SlurmJobError)
    message = str(error)
    assert "Slurm job 1000_1 " in message and f"state {state}" in message
    assert states.explain(state) in message
    assert f"{pool.folder.absolute()}/1000_1_0_log.out" in message
    assert "1000_1_0_log.err" in message
    if state == "TIMEOUT":
        assert "time limit 20 min" in message and "raise SlurmSpec.time_min" in message
    if state == "OUT_OF_MEMORY":
        assert "raise SlurmSpec.mem_gb" in message


def test_a_sacct_hiccup_is_retried(session: Session, caplog: pytest.LogCaptureFixture) -> None:
    client = FakeSlurmClient(run=False)
    pool = SlurmPool(session.store, settings(client))
    try:
        (future,) = pool.submit_many(leaves(session)[:1])
        client.hiccup(2)
        client.set_state("1000", "TIMEOUT")
        error = future.exception(timeout=10)
    finally:
        pool.shutdown()
    assert isinstance(error, SlurmJobError) and "timed out" in str(error)
    assert "could not read Slurm job states" in caplog.text


def test_a_refused_spec_falls_back(session: Session) -> None:
    client = FakeSlurmClient()
    client.refuse(partition="gpu")
    report = run_missing(
        session.store, session.plan(OnGpu).missing, mode=Mode.SLURM, slurm=settings(client)
    )
    assert len(report.computed) == 1
    ((job_name, refused, message),) = client.refusals
    assert (job_name, refused.partition, refused.gpus) == ("further-on_gpu", "gpu", 1)
    assert "sbatch: error" in message
    ((accepted),) = client.submissions
    assert (accepted.spec.partition, accepted.spec.gpus) == ("debug", 0)


def test_every_spec_refused_fails_the_instances_with_each_refusal(session: Session) -> None:
    client = FakeSlurmClient()
    client.refuse("sbatch: error: Invalid partition name specified")
    pool = SlurmPool(session.store, settings(client))
    try:
        (future,) = pool.submit_many(session.plan(OnGpu).missing)
    finally:
        pool.shutdown()
    error = future.exception(timeout=1)
    assert isinstance(error, SlurmSubmissionError)
    assert "refused every attempt to submit 'further-on_gpu' (2)" in str(error)
    assert "partition='gpu'" in str(error) and "partition='debug'" in str(error)
    assert client.submissions == []


def test_shutdown_with_cancel_futures_cancels_the_pending_tasks(session: Session) -> None:
    client = FakeSlurmClient(run=False)
    pool = SlurmPool(session.store, settings(client))
    futures = pool.submit_many(leaves(session))
    pool.shutdown(wait=True, cancel_futures=True)
    assert client.cancelled == ["1000"]  # the whole array, by its parent id
    assert all(f.cancelled() for f in futures)
    assert set(client.states(["1000"]).values()) == {"CANCELLED"}
    client.start()  # cancelled jobs never run
    assert client.states(["1000"]) == {f"1000_{i}": "CANCELLED" for i in range(3)}


# --- a static chapter in one pass, with Slurm's dependencies ---------------------------------


class ChainParams(ProjectParams):
    i: int = 0
    j: int = 0


chain = Project("slurm_chain_demo", params=ChainParams)


class IJ(Specs):
    i: int = 0
    j: int = 0


class Load(Cell, project=chain):
    Specs = IJ
    project_params = ("i", "j")
    contributions = {"v": int}

    def make(self) -> dict[str, Any]:
        return {"v": self.specs.i * 10 + self.specs.j}


class Fit(Cell, project=chain):
    Specs = IJ
    project_params = ("i", "j")
    req_cells = {"load": Req("load")}
    contributions = {"v": int}

    def make(self) -> dict[str, Any]:
        return {"v": self.inputs["load"].v + 1}


class Score(Cell, project=chain):
    Specs = IJ
    project_params = ("i", "j")
    req_cells = {"fit": Req("fit")}
    contributions = {"v": int}

    def make(self) -> dict[str, Any]:
        return {"v": self.inputs["fit"].v * 2}


class Side(Cell, project=chain):
    """Independent of the chain, same spec: goes in the first array with the loads."""

    class Specs(Specs):
        i: int = 0

    project_params = ("i",)
    contributions = {"v": int}

    def make(self) -> dict[str, Any]:
        return {"v": -self.specs.i}


SWEEP = {"i": VAR([0, 1]), "j": VAR([0, 1, 2])}


def chain_missing(session: Session, *roots: type) -> list[Instance]:
    found: dict[str, Instance] = {}
    for root in roots:
        found.update((i.key, i) for i in session.plan(root, params=SWEEP).missing)
    return list(found.values())


def test_a_static_chapter_goes_to_slurm_in_one_pass(session: Session) -> None:
    """A 3-level sweep: every array is submitted before any task runs, each level waiting for
    the one below task by task (aftercorr); an independent cell ready with the first level
    shares its array."""
    client = FakeSlurmClient(run=False)  # nothing runs until every submission is in
    missing = chain_missing(session, Score, Side)
    pool = SlurmPool(session.store, settings(client))
    try:
        futures = pool.submit_graph(missing)
        assert [(s.job_name, len(s.calls), s.dependency) for s in client.submissions] == [
            ("further-load+side", 6 + 2, None),
            ("further-fit", 6, Dependency(aftercorr=("1000",))),
            ("further-score", 6, Dependency(aftercorr=("1001",))),
        ]
        client.start()
        assert all(not f.result(timeout=10).hit for f in futures)
    finally:
        pool.shutdown()
    scores: Any = session.call(Score, params=SWEEP)
    assert [s.v for s in scores] == [(i * 10 + j + 1) * 2 for i in (0, 1) for j in (0, 1, 2)]


def test_a_chain_below_a_full_array_waits_task_by_task(session: Session) -> None:
    """Level 2 waits for level 1 by aftercorr once level 1 is a whole array of its own."""
    client = FakeSlurmClient()
    report = run_missing(
        session.store, chain_missing(session, Score), mode=Mode.SLURM, slurm=settings(client)
    )
    assert len(report.computed) == 18
    deps = [s.dependency for s in client.submissions]
    assert deps == [None, Dependency(aftercorr=("1000",)), Dependency(aftercorr=("1001",))]
    # the dependency is honoured: each fit task ran after its own load task
    again = run_missing(
        session.store, chain_missing(session, Score), mode=Mode.SLURM, slurm=settings(client)
    )
    assert again.computed == [] and len(client.submissions) == 3  # stored: nothing submitted


def test_only_missing_instances_are_submitted(session: Session) -> None:
    session.call(Fit, params={"i": VAR([0, 1]), "j": VAR([0])})  # two fits stored
    client = FakeSlurmClient()
    report = run_missing(
        session.store, chain_missing(session, Score), mode=Mode.SLURM, slurm=settings(client)
    )
    assert len(report.computed) == 6 * 3 - 2 * 2
    # scores over a stored fit are ready with the loads: one array; the others wait for
    # their own fit
    assert [(len(s.calls), s.dependency) for s in client.submissions] == [
        (4 + 2, None),
        (4, Dependency(aftercorr=("1000",))),
        (4, Dependency(aftercorr=("1001",))),
    ]


def test_without_dependencies_each_wave_waits_for_the_last(session: Session) -> None:
    client = FakeSlurmClient()
    run_missing(
        session.store,
        chain_missing(session, Score),
        mode=Mode.SLURM,
        slurm=settings(client, dependencies=False),
    )
    # what is ready when a wave ends is the next wave: never a dependency, never fewer than
    # one submission per level
    assert {s.dependency for s in client.submissions} == {None}
    assert len(client.submissions) >= 3 and sum(len(s.calls) for s in client.submissions) == 18


def test_a_failure_in_a_chapter_cancels_only_what_waits_on_it(session: Session) -> None:
    """Leaf 3 fails: the tasks waiting on it (mid_b, then top) are cancelled in Slurm and
    counted as blocked; every other task runs and is stored."""
    from tests.engine.static_cells import Good, Top

    client = FakeSlurmClient()
    found: dict[str, Instance] = {}
    for root in (Top, Good):
        found.update((i.key, i) for i in session.plan(root).missing)
    with pytest.raises(CellComputeError, match="1 instance\\(s\\) failed, 2 blocked") as failed:
        run_missing(session.store, list(found.values()), mode=Mode.SLURM, slurm=settings(client))
    assert "leaf refuses k=3" in str(failed.value)
    names = [s.job_name for s in client.submissions]
    assert names[0] == "further-leaf" and len(client.submissions[0].calls) == 6
    assert sorted(names[1:]) == sorted(
        ["further-mid_a", "further-mid_b", "further-mid_c", "further-top", "further-good"]
    )
    assert session.plan(Good).missing == []
    assert [i.cell.name for i in session.plan(Top).missing] == ["leaf", "mid_b", "top"]
    by_name = {s.job_name: s.job_ids[0] for s in client.submissions}
    assert by_name["further-mid_b"] in client.cancelled
    assert by_name["further-top"] in client.cancelled
    assert client.state(by_name["further-top"]) == "CANCELLED"


class FlakyLoad(Load, project=chain):
    def make(self) -> dict[str, Any]:
        if (self.specs.i, self.specs.j) == (1, 1):
            raise ValueError("flaky_load refuses (1, 1)")
        return super().make()


class FlakyFit(Fit, project=chain):
    req_cells = {"load": Req("flaky_load")}


class FlakyScore(Score, project=chain):
    req_cells = {"fit": Req("flaky_fit")}


def test_a_failure_under_aftercorr_cancels_only_the_tasks_of_its_index(session: Session) -> None:
    client = FakeSlurmClient()
    missing = chain_missing(session, FlakyScore)
    with pytest.raises(CellComputeError, match="1 instance\\(s\\) failed, 2 blocked"):
        run_missing(session.store, missing, mode=Mode.SLURM, slurm=settings(client))
    loads, fits, scores = client.submissions
    assert fits.dependency == Dependency(aftercorr=(loads.job_ids[0].split("_")[0],))
    index = next(n for n, call in enumerate(loads.calls) if _specs(call) == (1, 1))
    assert sorted(client.cancelled) == [fits.job_ids[index], scores.job_ids[index]]
    left = chain_missing(session, FlakyScore)
    assert sorted(i.cell.name for i in left) == ["flaky_fit", "flaky_load", "flaky_score"]


def _specs(call: Any) -> tuple[int, int]:
    import pickle

    _, inst = pickle.loads(call.args[0].data)
    return (inst.specs.i, inst.specs.j)
