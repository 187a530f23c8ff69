"""Execution modes in Dagster: the run tag / executor config pick the executor, and every
mode still skips stored steps."""

from pathlib import Path

import dagster as dg
import pytest

from further_dagster.dagster import location_of
from further_dagster.dagster.run_config import run_mode
from further_dagster.dagster.slurm_schema import job_ids_in_tags, spec_from_config
from further_dagster.dagster.tags import MODE_TAG
from further_dagster.engine.modes import Mode
from further_dagster.errors import ExecutionModeError
from further_dagster.slurm import SlurmSpec
from tests.dagster import defs_module

pytestmark = pytest.mark.dagster

ROOT = Path(__file__).resolve().parents[2]
SRC = dg.AssetKey(["dag_demo", "src"])
POWER = dg.AssetKey(["dag_demo", "power"])


def test_run_tag_beats_executor_config_beats_the_default() -> None:
    config = {"execution": {"config": {"mode": "dask"}}}
    assert run_mode({}, None, "LOCAL") is Mode.LOCAL
    assert run_mode({}, config, "LOCAL") is Mode.DASK
    assert run_mode({MODE_TAG: "inline"}, config, "LOCAL") is Mode.INLINE
    with pytest.raises(ExecutionModeError, match="valid: INLINE, LOCAL"):
        run_mode({MODE_TAG: "threads"}, None, "LOCAL")


def test_spec_config_sets_only_given_fields_and_tags_name_every_job() -> None:
    spec = spec_from_config({"partition": "gpu", "extra": {"qos": "low"}, "folder": "/x"})
    assert spec == SlurmSpec(partition="gpu", extra={"qos": "low"})
    assert spec.model_fields_set == {"partition", "extra"}
    tags = {
        "further/slurm_job_id": "10",
        "further/slurm_step/a": "11",
        "further/slurm_step/b": "local:123@host",
        "further/slurm_array/c": "12,15",
        "dagster/partition": "x",
    }
    assert sorted(job_ids_in_tags(tags)) == ["10", "11", "12", "15"]


def _run(instance, tags, run_config=None):
    from dagster._core.definitions.reconstruct import ReconstructableRepository

    repo = ReconstructableRepository.for_module(
        "tests.dagster.defs_module", "defs", working_directory=str(ROOT)
    )
    job = repo.get_reconstructable_job("__ASSET_JOB")
    keys = location_of(defs_module.defs).asset_by_key[POWER].partitions.keys
    tags = {
        **tags,
        "dagster/asset_partition_range_start": keys[0],
        "dagster/asset_partition_range_end": keys[-1],
    }
    with dg.execute_job(
        job, instance=instance, asset_selection=[SRC, POWER], tags=tags, run_config=run_config
    ) as result:
        assert result.success
        return [(e.event_type_value, e.step_key, e.message or "") for e in result.all_events]


def _engine_messages(events):
    return [m for t, _, m in events if t == "ENGINE_EVENT"]


def test_inline_mode_from_the_run_tag_runs_in_process(further_tmp_root, calls, dagster_instance):
    events = _run(dagster_instance, {MODE_TAG: "INLINE"})
    assert any("in process" in m for m in _engine_messages(events))
    assert calls.count() == 1 + 3
    # the instances of a step run in the step's own thread in INLINE mode
    assert {c[3] for c in calls.read()} == {"MainThread"}


def test_dask_mode_runs_on_dagster_dask_and_skips_stored_steps(further_tmp_root, calls):
    config = {"execution": {"config": {"dask": {"cluster": {"local": {"n_workers": 1}}}}}}
    with dg.instance_for_test() as instance:
        first = _run(instance, {MODE_TAG: "DASK"}, config)
        started = sorted(k for t, k, _ in first if t == "STEP_START")
        assert started == ["dag_demo__power", "dag_demo__src"]
        assert calls.count() == 1 + 3
        second = _run(instance, {MODE_TAG: "DASK"}, config)
        assert [k for t, k, _ in second if t == "STEP_START"] == []
        assert any("2 step(s) already stored" in m for m in _engine_messages(second))
        assert calls.count() == 1 + 3


def test_the_slurm_layer_merges_launcher_defaults_under_the_run_config(tmp_path):
    from types import SimpleNamespace

    from further_dagster.dagster.run_config import slurm_layer
    from further_dagster.slurm import SlurmSpec

    launcher = SimpleNamespace(defaults=SlurmSpec(partition="debug", mem_gb=4), folder=None)
    instance = SimpleNamespace(run_launcher=launcher, root_directory=str(tmp_path))
    layer = slurm_layer(instance, "run1", {"slurm": {"time_min": 30, "array": False}})
    assert layer.base.partition == "debug" and layer.base.mem_gb == 4
    assert layer.base.time_min == 30 and layer.array is False
    # only the fields a layer set are carried, so each cell's own spec still wins over them
    assert layer.base.model_fields_set == {"partition", "mem_gb", "time_min"}
    assert layer.folder == tmp_path / "slurm" / "run1"
    explicit = slurm_layer(instance, "run1", {"slurm": {"folder": str(tmp_path / "x")}})
    assert explicit.folder == tmp_path / "x" / "run1"
