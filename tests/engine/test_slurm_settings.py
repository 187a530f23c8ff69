"""Engine SLURM mode without a cluster: settings, spec layering, modes of cells."""

import pytest

from further_dagster import Cell, Project
from further_dagster.engine.backends.slurm import cell_spec, spec_for, spec_json
from further_dagster.errors import SlurmJobError
from further_dagster.slurm import SlurmSpec

pytestmark = pytest.mark.unit

project = Project("slurm_settings_demo")


class OnGpu(Cell, project=project):
    slurm = [SlurmSpec(partition="gpu", gpus=1), SlurmSpec(partition="debug", gpus=0)]
    contributions = {"x": int}

    def make(self):
        return {"x": 1}


class AsDict(Cell, project=project):
    slurm = {"cpus": 4}
    contributions = {"x": int}

    def make(self):
        return {"x": 1}


def test_a_list_is_a_spec_with_ordered_fallbacks() -> None:
    spec = cell_spec(OnGpu)
    assert spec is not None
    assert [s.partition for s in spec.attempts()] == ["gpu", "debug"]
    assert [s.gpus for s in spec.attempts()] == [1, 0]
    assert cell_spec(AsDict) == SlurmSpec(cpus=4)


def test_layers_merge_defaults_then_executor_then_cell() -> None:
    base = SlurmSpec(partition="debug", cpus=2, time_min=20)
    merged = spec_for(AsDict, base)
    assert (merged.partition, merged.cpus, merged.time_min) == ("debug", 4, 20)
    first, fallback = spec_for(OnGpu, base).attempts()
    assert (first.partition, first.gpus, first.cpus) == ("gpu", 1, 2)
    assert (fallback.partition, fallback.gpus, fallback.cpus) == ("debug", 0, 2)
    assert spec_json(merged) == {"cpus": 4, "partition": "debug", "time_min": 20}


def test_a_bad_slurm_attribute_says_what_is_expected() -> None:
    class Bad:
        full_name = "p.bad"
        slurm = 3

    with pytest.raises(SlurmJobError, match="must be a SlurmSpec"):
        cell_spec(Bad)
