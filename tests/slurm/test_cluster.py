"""submitit on the real single-node Slurm cluster: results, errors, arrays, fallbacks, GPUs,
cancellation and sacct states."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cloudpickle  # type: ignore[import-untyped]
import pytest
from submitit.core.utils import FailedJobError

from further_dagster.errors import SlurmSubmissionError
from further_dagster.slurm import (
    SlurmSpec,
    cancel,
    sbatch_text,
    slurm_state,
    slurm_states,
    submit_batch,
    submit_with_fallbacks,
)

pytestmark = pytest.mark.slurm

# Jobs unpickle their function in a fresh interpreter that cannot import this test module:
# ship its functions by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

# time_min > 10: with <= 10 submitit counts every USR2 as a timeout (see notes/slurm.md).
SPEC = SlurmSpec(time_min=15)


def add(a: int, b: int) -> int:
    return a + b


def square(x: int) -> int:
    return x * x


def explode(tag: str) -> None:
    raise ValueError(f"remote failure {tag}")


def job_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if "GPU" in k or k.startswith(("SLURM", "CUDA"))}


def sleep_long(started: str) -> None:
    Path(started).touch()
    time.sleep(300)


def eventually(check: Callable[[], object], timeout: float = 15.0, what: str = "") -> object:
    """Poll until check() is truthy (accounting lags the controller by up to a second)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or check}")
        time.sleep(0.2)


def test_job_returns_result_and_completes(slurm_folder: Path) -> None:
    job = submit_with_fallbacks(slurm_folder, SPEC, add, 2, 3, job_name="add")
    assert job.result() == 5
    eventually(lambda: slurm_state(job.job_id) == "COMPLETED", what="sacct COMPLETED")
    # what was submitted is exactly what render.sbatch_text produces
    assert job.paths.submission_file.read_text() == sbatch_text(SPEC, slurm_folder, "add")


def test_remote_exception_surfaces_with_traceback(slurm_folder: Path) -> None:
    job = submit_with_fallbacks(slurm_folder, SPEC, explode, "xyz-42")
    with pytest.raises(FailedJobError) as err:
        job.result()
    message = str(err.value)
    assert "ValueError: remote failure xyz-42" in message
    assert "Traceback" in message and "in explode" in message
    eventually(lambda: slurm_state(job.job_id) in {"FAILED", "COMPLETED"}, what="final state")


def test_batch_of_ten_is_one_array_job(slurm_folder: Path) -> None:
    jobs = submit_batch(slurm_folder, SPEC, [(square, i) for i in range(10)], job_name="sq")
    array_ids = {job.job_id.split("_")[0] for job in jobs}
    assert len(array_ids) == 1, [job.job_id for job in jobs]
    (array_id,) = array_ids
    assert [job.job_id for job in jobs] == [f"{array_id}_{i}" for i in range(10)]
    assert [job.result() for job in jobs] == [i * i for i in range(10)]

    def all_completed() -> bool:
        states = slurm_states(array_id)
        return sorted(states) == sorted(j.job_id for j in jobs) and set(states.values()) == {
            "COMPLETED"
        }

    eventually(all_completed, what="10 COMPLETED array tasks in sacct")
    assert slurm_state(array_id) == "COMPLETED"


def test_impossible_request_is_refused_with_sbatch_message(slurm_folder: Path) -> None:
    with pytest.raises(SlurmSubmissionError) as err:
        submit_with_fallbacks(slurm_folder, SlurmSpec(cpus=64, time_min=15), add, 1, 1)
    message = str(err.value)
    assert "sbatch: error:" in message, message
    assert "cpus=64" in message


def test_fallback_that_fits_is_used(slurm_folder: Path) -> None:
    spec = SlurmSpec(
        cpus=64,
        time_min=15,
        fallbacks=(SlurmSpec(partition="nonexistent"), SlurmSpec(cpus=2)),
    )
    job = submit_with_fallbacks(slurm_folder, spec, add, 20, 22)
    assert job.result() == 42
    submitted = job.paths.submission_file.read_text()
    assert "#SBATCH --cpus-per-task=2\n" in submitted
    assert submitted == sbatch_text(spec.attempts()[2], slurm_folder)


def test_gpu_partition_job_sees_its_gpus(slurm_folder: Path) -> None:
    job = submit_with_fallbacks(
        slurm_folder, SlurmSpec(partition="gpu", gpus=2, time_min=15), job_env
    )
    env = job.result()
    assert env["SLURM_JOB_PARTITION"] == "gpu"
    assert env.get("CUDA_VISIBLE_DEVICES") == "0,1" or env.get("SLURM_JOB_GPUS") == "0,1", env


def test_cancel_leaves_nothing_in_squeue(slurm_folder: Path) -> None:
    started = slurm_folder / "started"
    job = submit_with_fallbacks(slurm_folder, SPEC, sleep_long, str(started))
    # cancel inside the function (submitit ignores SIGTERM there: SIGKILL follows KillWait)
    eventually(started.exists, what="the function to start")
    assert slurm_state(job.job_id) == "RUNNING"
    cancel(job.job_id)

    def gone_from_squeue() -> bool:
        out = subprocess.run(
            ["squeue", "-h", "-j", job.job_id, "-o", "%i %T"], capture_output=True, text=True
        )
        return out.stdout.strip() == ""

    eventually(gone_from_squeue, what="squeue empty after scancel")
    eventually(lambda: slurm_state(job.job_id) == "CANCELLED", what="sacct CANCELLED")
    assert job.done(force_check=True)
    cancel(job.job_id)  # cancelling again is harmless
