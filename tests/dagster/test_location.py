"""A code location's settings belong to it: two Definitions in one process never mix."""

import shutil
from pathlib import Path

import dagster as dg
import pytest

from further_dagster.dagster import location_of
from tests.dagster import two_roots

pytestmark = pytest.mark.dagster

ROOT = Path(__file__).resolve().parents[2]
SRC = dg.AssetKey(["dag_demo", "src"])


def _run(attribute: str, instance: dg.DagsterInstance) -> list[dg.DagsterEvent]:
    # Dagster has no public way to make an asset job reconstructable outside a code location.
    from dagster._core.definitions.reconstruct import ReconstructableRepository

    repo = ReconstructableRepository.for_module(
        "tests.dagster.two_roots", attribute, working_directory=str(ROOT)
    )
    job = repo.get_reconstructable_job("__ASSET_JOB")
    with dg.execute_job(job, instance=instance, asset_selection=[SRC]) as result:
        assert result.success
        return list(result.all_events)


def _stored(root: Path) -> list[str]:
    cell_dir = root / "dag_demo" / "src"
    return (
        sorted(p.name for p in cell_dir.iterdir() if (p / "result").is_dir())
        if cell_dir.exists()
        else []
    )


@pytest.fixture
def clean_roots():
    for root in (two_roots.ROOT_A, two_roots.ROOT_B):
        shutil.rmtree(root, ignore_errors=True)
    yield
    for root in (two_roots.ROOT_A, two_roots.ROOT_B):
        shutil.rmtree(root, ignore_errors=True)


def test_each_definitions_materializes_into_its_own_root(clean_roots, calls, dagster_instance):
    assert location_of(two_roots.defs_a).store().root == two_roots.ROOT_A
    assert location_of(two_roots.defs_b).store().root == two_roots.ROOT_B

    _run("defs_a", dagster_instance)
    assert len(_stored(two_roots.ROOT_A)) == 1 and _stored(two_roots.ROOT_B) == []
    assert calls.count("src") == 1

    # the second location does not see the first one's store: it computes into its own root
    events = _run("defs_b", dagster_instance)
    assert [e.step_key for e in events if e.event_type_value == "STEP_START"] == ["dag_demo__src"]
    assert _stored(two_roots.ROOT_B) == _stored(two_roots.ROOT_A)
    assert calls.count("src") == 2

    # and the first one still uses its own: stored there, so the step does not even start
    again = _run("defs_a", dagster_instance)
    assert [e for e in again if e.event_type_value == "STEP_START"] == []
    mats = [e for e in again if e.event_type_value == "ASSET_MATERIALIZATION"]
    path = mats[0].event_specific_data.materialization.metadata["further/artifact_path"].value
    assert path.startswith(str(two_roots.ROOT_A))
    assert calls.count("src") == 2


def test_location_of_finds_the_location_of_definitions_and_jobs():
    location = location_of(two_roots.defs_a)
    assert location is not None and location is not location_of(two_roots.defs_b)
    job = two_roots.defs_a.resolve_implicit_global_asset_job_def()
    assert location_of(job) is location
    assert location_of(dg.Definitions(assets=[])) is None
