"""The sbatch text submitit writes for a SlurmSpec, pinned by golden files.

Pure: neither a cluster nor Slurm's commands are needed. Regenerate after an intended change:
FURTHER_UPDATE_GOLDEN=1 pytest tests/slurm/test_render.py
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, cast

import pytest

from further_dagster.slurm import Dependency, SlurmSpec, sbatch_text, slurm_parameters
from further_dagster.slurm._submitit import SlurmExecutor
from further_dagster.slurm.client import make_executor

pytestmark = pytest.mark.unit

GOLDEN = Path(__file__).parent / "golden"
FOLDER = "/shared/further/submitit"  # absolute and fake: the text must not depend on the machine

CASES: dict[str, tuple[SlurmSpec, dict[str, Any]]] = {
    "default": (SlurmSpec(), {}),
    "gpu": (SlurmSpec(partition="gpu", gpus=2, cpus=4), {"job_name": "train"}),
    "high_mem": (SlurmSpec(partition="high", mem_gb=2.5, time_min=15), {"job_name": "urgent"}),
    "extra": (
        SlurmSpec(extra={"qos": "low", "mail_type": "FAIL", "exclusive": "", "comment": "nightly"}),
        {},
    ),
    "array": (SlurmSpec(cpus=2), {"array_size": 10, "job_name": "map"}),
    "afterok": (
        SlurmSpec(extra={"qos": "low"}),
        {"job_name": "gather", "dependency": Dependency(afterok=("12", "13_0", "13_4"))},
    ),
    "aftercorr": (
        SlurmSpec(),
        {"array_size": 4, "job_name": "fit", "dependency": Dependency(aftercorr=("12",))},
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_sbatch_text_matches_golden(name: str) -> None:
    spec, kwargs = CASES[name]
    text = sbatch_text(spec, FOLDER, python="python", **kwargs)
    path = GOLDEN / f"{name}.sbatch"
    if os.environ.get("FURTHER_UPDATE_GOLDEN") == "1":
        path.write_text(text)
    assert path.exists(), f"missing {path}: run with FURTHER_UPDATE_GOLDEN=1 to create it"
    assert text == path.read_text(), f"{path} differs: FURTHER_UPDATE_GOLDEN=1 after review"


def test_sbatch_text_is_deterministic() -> None:
    spec = SlurmSpec(partition="gpu", gpus=1, extra={"qos": "low"})
    assert sbatch_text(spec, FOLDER, python="python") == sbatch_text(spec, FOLDER, python="python")
    assert "/tmp" not in sbatch_text(spec, FOLDER, python="python")


def test_sbatch_text_defaults_to_this_interpreter() -> None:
    import shlex

    assert shlex.quote(sys.executable) in sbatch_text(SlurmSpec(), FOLDER)


def test_array_size_must_be_an_array() -> None:
    with pytest.raises(ValueError, match="array_size"):
        sbatch_text(SlurmSpec(), FOLDER, array_size=1)


@pytest.mark.parametrize("name", sorted(set(CASES) - {"array", "aftercorr"}))
def test_render_agrees_with_a_real_submitit_executor(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """submitit's own executor writes the same text. It refuses to exist without `srun` on
    PATH, which writing text does not need: tell it srun is there."""
    monkeypatch.setattr(SlurmExecutor, "affinity", classmethod(lambda cls: 2))
    spec, kwargs = CASES[name]
    job_name = kwargs.get("job_name", "submitit")
    dependency = kwargs.get("dependency")
    executor = make_executor(
        tmp_path, spec, job_name=job_name, python="python", dependency=dependency
    )
    inner = cast(SlurmExecutor, executor._executor)
    assert inner.parameters == slurm_parameters(spec, job_name, dependency)
    written = inner._make_submission_file_text(inner._submitit_command_str, "uid")
    assert written == sbatch_text(spec, tmp_path, job_name, python="python", dependency=dependency)
