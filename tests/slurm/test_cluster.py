"""`SubmititClient` on the real single-node Slurm cluster: results, errors, arrays, fallbacks,
GPUs, cancellation and sacct states (what `FakeSlurmClient` claims, checked for real)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cloudpickle  # type: ignore[import-untyped]
import pytest

from further_dagster.errors import SlurmSubmissionError
from further_dagster.slurm import JobResult, SlurmClient, SlurmSpec, SubmittedJob, sbatch_text
from further_dagster.slurm.client import SubmititClient, describe_job_end

pytestmark = pytest.mark.slurm

# Jobs unpickle their function in a fresh interpreter that cannot import this test module:
# ship its functions by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

# time_min > 10: with <= 10 submitit counts every USR2 as a timeout (see notes/slurm.md).
SPEC = SlurmSpec(time_min=15)
CLIENT = SubmititClient()


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


def result_of(job: SubmittedJob, timeout: float = 60.0) -> JobResult:
    found = eventually(lambda: CLIENT.result(job), timeout, what=f"the result of {job.job_id}")
    assert isinstance(found, JobResult)
    return found


def test_the_real_client_is_a_slurm_client() -> None:
    assert isinstance(CLIENT, SlurmClient)


def test_job_returns_result_and_completes(slurm_folder: Path) -> None:
    job = CLIENT.submit(slurm_folder, SPEC, add, 2, 3, job_name="add")
    assert result_of(job) == JobResult(ok=True, value=5)
    eventually(lambda: CLIENT.state(job.job_id) == "COMPLETED", what="sacct COMPLETED")
    # what was submitted is exactly what render.sbatch_text produces
    assert job.submission_file.read_text() == sbatch_text(SPEC, slurm_folder, "add")
    assert job == CLIENT.job(slurm_folder, job.job_id)  # found again from its id alone
    assert job.stdout.exists() and job.stderr.exists()


def test_remote_exception_surfaces_with_traceback(slurm_folder: Path) -> None:
    job = CLIENT.submit(slurm_folder, SPEC, explode, "xyz-42")
    result = result_of(job)
    assert not result.ok and not result.timed_out
    assert "ValueError: remote failure xyz-42" in result.traceback
    assert "Traceback" in result.traceback and "in explode" in result.traceback
    eventually(lambda: CLIENT.state(job.job_id) in {"FAILED", "COMPLETED"}, what="final state")


def test_batch_of_ten_is_one_array_job(slurm_folder: Path) -> None:
    jobs = CLIENT.submit_batch(slurm_folder, SPEC, [(square, i) for i in range(10)], job_name="sq")
    array_ids = {job.array_id for job in jobs}
    assert len(array_ids) == 1, [job.job_id for job in jobs]
    (array_id,) = array_ids
    assert [job.job_id for job in jobs] == [f"{array_id}_{i}" for i in range(10)]
    assert [result_of(job).value for job in jobs] == [i * i for i in range(10)]

    def all_completed() -> bool:
        states = CLIENT.accounting_states(array_id)
        return sorted(states) == sorted(j.job_id for j in jobs) and set(states.values()) == {
            "COMPLETED"
        }

    eventually(all_completed, what="10 COMPLETED array tasks in sacct")
    assert CLIENT.state(array_id) == "COMPLETED"
    assert set(CLIENT.states([array_id]).values()) == {"COMPLETED"}
    assert sorted(CLIENT.states(j.job_id for j in jobs)) == sorted(j.job_id for j in jobs)


def test_impossible_request_is_refused_with_sbatch_message(slurm_folder: Path) -> None:
    with pytest.raises(SlurmSubmissionError) as err:
        CLIENT.submit(slurm_folder, SlurmSpec(cpus=64, time_min=15), add, 1, 1)
    message = str(err.value)
    assert "sbatch: error:" in message, message
    assert "cpus=64" in message


def test_fallback_that_fits_is_used(slurm_folder: Path) -> None:
    spec = SlurmSpec(
        cpus=64,
        time_min=15,
        fallbacks=(SlurmSpec(partition="nonexistent"), SlurmSpec(cpus=2)),
    )
    job = CLIENT.submit(slurm_folder, spec, add, 20, 22)
    assert result_of(job).value == 42
    submitted = job.submission_file.read_text()
    assert "#SBATCH --cpus-per-task=2\n" in submitted
    assert submitted == sbatch_text(spec.attempts()[2], slurm_folder)


def test_gpu_partition_job_sees_its_gpus(slurm_folder: Path) -> None:
    job = CLIENT.submit(slurm_folder, SlurmSpec(partition="gpu", gpus=2, time_min=15), job_env)
    env = result_of(job).value
    assert env["SLURM_JOB_PARTITION"] == "gpu"
    assert env.get("CUDA_VISIBLE_DEVICES") == "0,1" or env.get("SLURM_JOB_GPUS") == "0,1", env


def test_cancel_leaves_nothing_in_squeue(slurm_folder: Path) -> None:
    started = slurm_folder / "started"
    job = CLIENT.submit(slurm_folder, SPEC, sleep_long, str(started))
    # cancel inside the function (submitit ignores SIGTERM there: SIGKILL follows KillWait)
    eventually(started.exists, what="the function to start")
    assert CLIENT.state(job.job_id) == "RUNNING"
    CLIENT.cancel(job.job_id)

    def gone_from_squeue() -> bool:
        out = subprocess.run(
            ["squeue", "-h", "-j", job.job_id, "-o", "%i %T"], capture_output=True, text=True
        )
        return out.stdout.strip() == ""

    eventually(gone_from_squeue, what="squeue empty after scancel")
    eventually(lambda: CLIENT.state(job.job_id) == "CANCELLED", what="sacct CANCELLED")
    assert CLIENT.result(job) is None  # killed: no result file
    message = describe_job_end(CLIENT, job.job_id, "CANCELLED", slurm_folder, what="a test")
    assert f"Slurm job {job.job_id} for a test was cancelled" in message
    assert str(job.stdout) in message and str(job.stderr) in message
    CLIENT.cancel(job.job_id)  # cancelling again is harmless
    assert CLIENT.state("999999") == "UNKNOWN"
