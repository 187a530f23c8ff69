"""From a `SlurmSpec` to what submitit submits: pure functions, no cluster (nor srun) needed.

`submitit_parameters` gives the `AutoExecutor.update_parameters` keys; `sbatch_text` renders the
exact sbatch script submitit writes for them, with submitit's own renderer, so a
golden file can pin it (tests/slurm/golden/*.sbatch).
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any

from further_dagster.slurm._submitit import (
    SUBMIT_MODULE,
    AutoExecutor,
    SlurmExecutor,
    convert_mem,
    make_sbatch_string,
)
from further_dagster.slurm.dependency import Dependency
from further_dagster.slurm.spec import SlurmSpec

__all__ = ["sbatch_text", "slurm_parameters", "submitit_parameters"]

_SLURM_PREFIX = "slurm_"


def submitit_parameters(spec: SlurmSpec, dependency: Dependency | None = None) -> dict[str, Any]:
    """`AutoExecutor.update_parameters` keyword arguments for `spec` (fallbacks are ignored)
    and `dependency` (`--dependency`).

    Generic keys where submitit has one (`cpus_per_task`, `mem_gb`, `timeout_min`), `slurm_`
    prefixed keys otherwise (`slurm_partition`, `slurm_gres`, `slurm_additional_parameters`).
    GPUs go through `--gres=gpu:N`, which works with select/cons_res and cons_tres alike. An
    `extra` option with an empty value becomes a bare flag (`--exclusive`).
    """
    params: dict[str, Any] = {"cpus_per_task": spec.cpus, "timeout_min": spec.time_min}
    if spec.partition is not None:
        params["slurm_partition"] = spec.partition
    if spec.gpus:
        params["slurm_gres"] = f"gpu:{spec.gpus}"
    if spec.mem_gb is not None:
        params["mem_gb"] = spec.mem_gb
    extra: dict[str, Any] = {
        name: (True if value == "" else value) for name, value in sorted(spec.extra.items())
    }
    if dependency:
        extra["dependency"] = dependency.sbatch()
    if extra:
        params["slurm_additional_parameters"] = dict(sorted(extra.items()))
    return params


def slurm_parameters(
    spec: SlurmSpec, job_name: str = "submitit", dependency: Dependency | None = None
) -> dict[str, Any]:
    """The `SlurmExecutor.parameters` an `AutoExecutor` ends up with for `spec` and `job_name`.

    Same translation as `AutoExecutor._internal_update_parameters` (generic names through
    `SlurmExecutor._equivalence_dict`, memory through `_convert_mem`, `slurm_` prefix dropped).
    """
    generic = AutoExecutor._typed_parameters()
    renames: dict[str, str] = {
        str(k): str(v) for k, v in (SlurmExecutor._equivalence_dict() or {}).items()
    }
    out: dict[str, Any] = {}
    for key, value in {"name": job_name, **submitit_parameters(spec, dependency)}.items():
        if key in generic:
            slurm_key = renames.get(key, key)
            out[slurm_key] = convert_mem(value) if slurm_key == "mem" else value
        else:
            assert key.startswith(_SLURM_PREFIX), key
            out[key[len(_SLURM_PREFIX) :]] = value
    return out


def sbatch_text(
    spec: SlurmSpec,
    folder: str | Path,
    job_name: str = "submitit",
    *,
    python: str | None = None,
    array_size: int | None = None,
    dependency: Dependency | None = None,
) -> str:
    """The sbatch script submitit writes when submitting with `spec` (its first attempt).

    Args:
        spec: the resources; `fallbacks` are ignored (render each of `spec.attempts()`).
        folder: submitit's job folder; made absolute as submitit does, so pass an absolute path
            for stable output.
        job_name: `--job-name`.
        python: the interpreter command in the script; None means what submitit uses,
            `shlex.quote(sys.executable)`. Pass e.g. "python" for machine-independent text.
        array_size: render the job-array script `executor.batch()` writes for that many calls.
        dependency: what the job waits for (`--dependency`).

    Returns:
        The script text, byte for byte what submitit writes (no uuids: those live only in the
        submission file's name).
    """
    folder = Path(folder).expanduser().absolute()
    interpreter = shlex.quote(sys.executable) if python is None else python
    command = " ".join([interpreter, f"-u -m {SUBMIT_MODULE}", shlex.quote(str(folder))])
    params = slurm_parameters(spec, job_name, dependency)
    if array_size is not None:
        if array_size < 2:  # submitit submits a single call as a plain job, not an array
            raise ValueError(f"array_size must be >= 2, got {array_size}")
        params["map_count"] = array_size
    return make_sbatch_string(command, folder, **params)
