"""A SLURM run through the wave executor (the default `steps: in_process`) on the real cluster.

The steps run in the run's process; the run's missing instances go to Slurm in one pass:
independent steps' instances that share a spec are ONE sbatch (one array), a dependent level
waits in Slurm (`--dependency`), not in the run's process. The step-handler path (`steps:
multiprocess`) is the reference the results are compared with. Cancelling a launched run in
this path: tests/slurm/test_dagster_slurm.py (`test_a_cancelled_*`, which use the default).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.slurm.test_dagster_slurm import (
    PER_STEP,
    accounting,
    eventually,
    failures,
    job_ids_in_tags,
    range_tags,
    run_assets,
    sbatch_calls,
)

pytestmark = pytest.mark.slurm

MAIN = ["prep", "side", "train", "summary"]


@pytest.fixture
def calls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[], list[dict[str, Any]]]:
    """The make() calls of slurm_project (JSON rows: cell, key, job, array_job, ...)."""
    path = tmp_path / "calls.jsonl"
    monkeypatch.setenv("FURTHER_TEST_CALLS", str(path))

    def read() -> list[dict[str, Any]]:
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines()]

    return read


def stored(events: list[Any]) -> dict[tuple[str, str | None], str | None]:
    """Each materialization of a run: (asset, partition) -> data version (the logic key)."""
    out = {}
    for event in events:
        if event.event_type_value == "ASSET_MATERIALIZATION":
            mat = event.event_specific_data.materialization
            out[(mat.asset_key.to_user_string(), mat.partition)] = mat.tags.get(
                "dagster/data_version"
            )
    return out


def ran_jobs(ran: Callable[[], list[dict[str, Any]]]) -> set[str]:
    """The parent ids of the Slurm jobs the make() calls so far ran in."""
    return {str(r.get("array_job") or r.get("job")) for r in ran()} - {"None"}


def accounted(ran: Callable[[], list[dict[str, Any]]]) -> set[str]:
    """`sbatch_calls()` once accounting knows every job a make() ran in so far: a `before`
    taken earlier would leave an earlier run's late-recorded job to count as this run's."""

    def check() -> tuple[set[str]] | None:
        known = sbatch_calls()
        return (known,) if ran_jobs(ran) <= known else None

    return eventually(check, 30, "accounting to know every job a make() ran in")[0]


def submitted_since(
    before: set[str], run_id: str, cells: list[str], ran: Callable[[], list[dict[str, Any]]]
) -> set[str]:
    """The sbatch calls (parent ids) accounting knows since `before` that are this run's: its
    arrays are named `further-<cell>+<cell>...`, its step jobs `dagster-<run id[:8]>-...`.
    Accounting may record a previous test's last jobs late, so the new ids alone do not do; and
    it may record this run's own jobs a moment after squeue forgot them, so this waits until it
    knows every job a make() ran in (`ran`: the `calls` fixture)."""
    sbatch_calls()  # settled

    def read() -> set[str] | None:
        out = set()
        known = set()
        for line in accounting("JobID,JobName%200"):
            job_id, _, name = line.partition("|")
            parent = job_id.split("_")[0]
            known.add(parent)
            if parent in before:
                continue
            ours = name.startswith(f"dagster-{run_id[:8]}-") or (
                name.startswith("further-") and set(name[8:].split("+")) <= set(cells)
            )
            if ours:
                out.add(parent)
        return out if ran_jobs(ran) <= known else None

    def check() -> tuple[set[str]] | None:  # a tuple: an empty set is an answer
        found = read()
        return None if found is None else (found,)

    return eventually(check, 30, "accounting to know every job a make() ran in")[0]


def by_cell(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        out.setdefault(row["cell"], []).append(row)
    return out


@pytest.mark.parametrize("dagster_backend", ["sqlite"], indirect=True)
def test_independent_steps_are_one_sbatch_and_results_equal_the_per_step_path(
    slurm_cluster, further_tmp_root, calls, dagster_instance, tmp_path, monkeypatch
):
    before = accounted(calls)
    ok, events, run_id = run_assets(dagster_instance, MAIN, range_tags("train"))
    assert ok, failures(events)
    # prep + side (two independent steps, one spec): one array; the sweep on gpu: one array,
    # submitted at once and held by Slurm until prep is stored; summary (inline): no job
    assert len(submitted_since(before, run_id, MAIN, calls)) == 2
    cells = by_cell(calls())
    assert cells["prep"][0]["array_job"] == cells["side"][0]["array_job"] is not None
    assert len({r["array_job"] for r in cells["train"]}) == 1 and len(cells["train"]) == 3
    assert cells["train"][0]["array_job"] != cells["prep"][0]["array_job"]
    assert cells["summary"][0]["job"] is None
    tags = dagster_instance.get_run_by_id(run_id).tags
    assert (
        tags["further/slurm_array/slurm_demo__prep"] == tags["further/slurm_array/slurm_demo__side"]
    )
    assert len(set(job_ids_in_tags(tags))) == 2
    waves = stored(events)
    assert len(waves) == 1 + 1 + 3 + 1

    # everything stored: nothing is submitted
    before = accounted(calls)
    ok, events, run_id = run_assets(dagster_instance, MAIN, range_tags("train"))
    assert ok and [e for e in events if e.event_type_value == "STEP_START"] == []
    assert submitted_since(before, run_id, MAIN, calls) == set()

    # the step handler over a fresh store: the same results, a job per step
    monkeypatch.setenv("FURTHER_ROOT", str(Path(tmp_path) / "per-step-store"))
    before = accounted(calls)
    ok, events, run_id = run_assets(dagster_instance, MAIN, range_tags("train"), PER_STEP)
    assert ok, failures(events)
    assert len(submitted_since(before, run_id, MAIN, calls)) == 3  # prep, side, the train array
    assert stored(events) == waves


@pytest.mark.parametrize("dagster_backend", ["sqlite"], indirect=True)
def test_cached_instances_are_never_submitted(
    slurm_cluster, further_tmp_root, calls, dagster_instance
):
    ok, events, _ = run_assets(dagster_instance, ["prep"])
    assert ok, failures(events)
    before = accounted(calls)
    ok, events, run_id = run_assets(dagster_instance, MAIN, range_tags("train"))
    assert ok, failures(events)
    # prep is stored: side (debug) and the sweep (gpu) are ready at once, one array each
    assert len(submitted_since(before, run_id, MAIN, calls)) == 2
    cells = by_cell(calls())
    assert len(cells["prep"]) == 1 and len(cells["side"]) == 1 and len(cells["train"]) == 3
    assert "further/slurm_array/slurm_demo__prep" not in dagster_instance.get_run_by_id(run_id).tags


@pytest.mark.parametrize("dagster_backend", ["sqlite"], indirect=True)
def test_a_failing_instance_fails_its_step_and_skips_downstream(
    slurm_cluster, further_tmp_root, calls, dagster_instance
):
    before = accounted(calls)
    ok, events, run_id = run_assets(
        dagster_instance, ["flaky", "flaky_sweep", "side"], range_tags("flaky")
    )
    assert not ok
    (message,) = failures(events)
    assert message.startswith("slurm_demo__flaky:")
    assert "flaky cell refuses k=2" in message and "Remote traceback" in message
    started = {e.step_key for e in events if e.event_type_value == "STEP_START"}
    assert "slurm_demo__flaky_sweep" not in started  # Dagster skipped it: its upstream failed
    succeeded = [e.step_key for e in events if e.event_type_value == "STEP_SUCCESS"]
    assert succeeded == ["slurm_demo__side"]
    # flaky's two instances and side (one spec) were one array
    assert len(submitted_since(before, run_id, ["flaky", "flaky_sweep", "side"], calls)) == 1
    cells = by_cell(calls())
    assert (
        len(cells["flaky"]) == 2 and cells["flaky"][0]["array_job"] == cells["side"][0]["array_job"]
    )
