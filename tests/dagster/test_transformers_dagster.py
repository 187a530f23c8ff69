"""Transformers picked per run in Dagster run config: keys follow, provenance records them."""

from pathlib import Path

import dagster as dg
import pytest

from further_dagster import Session
from tests.dagster.transformer_defs import Rescale, Unregistered, dag_tf, defs

pytestmark = pytest.mark.dagster

REPORT = dg.AssetKey(["dag_tf", "report"])
OP = "dag_tf__report"
ROOT = Path(__file__).resolve().parents[2]


def _run(instance, transformers, **kwargs):
    return dg.materialize(
        [a for a in defs.assets if REPORT in a.keys],
        instance=instance,
        resources=defs.resources,
        run_config={"ops": {OP: {"config": {"transformers": transformers}}}},
        **kwargs,
    )


def _key(instance):
    event = instance.get_latest_materialization_event(REPORT)
    return event.asset_materialization.metadata["further/logic_key"].value


def test_a_run_config_transformer_gives_the_sessions_instance(
    further_tmp_root, dagster_instance, calls
):
    assert _run(dagster_instance, {"fit/data": "Rescale"}).success
    session = Session(dag_tf, root=further_tmp_root, progress=False)
    plan = session.plan("dag_tf.report", transformers={"fit/data": Rescale})
    assert _key(dagster_instance) == plan.roots[0].key
    assert plan.missing == []  # the run stored every instance the Session call needs
    result = session.call("dag_tf.report", transformers={"fit/data": Rescale})
    assert result.total == 3.0 and result.raw == 6.0  # only the fit's data was rescaled
    assert calls.count("data") == 2 and calls.count("report") == 1
    # the transformed values are the child's Specs: its key is that of data(scale=0.5)
    data = next(i for i in plan.instances if i.cell.name == "data" and i.specs.scale == 0.5)
    assert session.plan("dag_tf.data", scale=0.5).roots[0].key == data.key
    (entry,) = session.store.read_provenance("dag_tf", "data", data.key).extra["transformers"]
    assert entry["path"] == "fit/data" and entry["logic_version"] == "3"
    assert entry["specs"] == {"factor": 0.5} and entry["transformer"].endswith("Rescale")


def test_specs_and_import_paths_select_transformers(further_tmp_root, dagster_instance):
    session = Session(dag_tf, root=further_tmp_root, progress=False)
    given = {"transformer": "Rescale", "specs": {"factor": 0.25}}
    assert _run(dagster_instance, {"fit/data": given}).success
    wanted = session.plan("dag_tf.report", transformers={"fit/data": Rescale(factor=0.25)})
    assert _key(dagster_instance) == wanted.roots[0].key and wanted.missing == []
    path = "tests.dagster.transformer_defs:Unregistered"
    assert _run(dagster_instance, {"raw": path}).success
    wanted = session.plan("dag_tf.report", transformers={"raw": Unregistered})
    assert _key(dagster_instance) == wanted.roots[0].key and wanted.missing == []
    assert session.call("dag_tf.report", transformers={"raw": Unregistered}).raw == 1.0


def _failure(result):
    event = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    return str(event.event_specific_data.error)


def test_transformer_mistakes_fail_the_step_naming_the_fix(
    further_tmp_root, dagster_instance, calls
):
    result = _run(dagster_instance, {"fit/data": "Standardize"}, raise_on_error=False)
    assert not result.success
    text = _failure(result)
    assert "no transformer 'Standardize'" in text and "Rescale" in text
    assert "transformers['fit/data']" in text
    result = _run(dagster_instance, {"fit/dta": "Rescale"}, raise_on_error=False)
    assert not result.success and "has no edge 'dta'" in _failure(result)
    result = _run(dagster_instance, {"fit/data": "nowhere.mod:T"}, raise_on_error=False)
    assert not result.success and "cannot import" in _failure(result)
    with pytest.raises(dg.DagsterInvalidConfigError, match="transformers"):
        _run(dagster_instance, {"fit/data": {"name": "Rescale"}})  # typed: checked before the run
    assert calls.count() == 0


def test_only_cells_with_edges_offer_transformers():
    schemas = {
        key.path[-1]: a.op.config_schema.config_type.fields
        for a in defs.assets
        for key in a.keys
        if key.path[0] == "dag_tf"
    }
    assert "transformers" in schemas["report"] and "transformers" in schemas["fit"]
    assert "transformers" not in schemas["data"]


def _skip_run(instance, transformers):
    # Dagster has no public way to make an asset job reconstructable outside a code location.
    from dagster._core.definitions.reconstruct import ReconstructableRepository

    repo = ReconstructableRepository.for_module(
        "tests.dagster.transformer_defs", "skip_defs", working_directory=str(ROOT)
    )
    with dg.execute_job(
        repo.get_reconstructable_job("__ASSET_JOB"),
        instance=instance,
        asset_selection=[REPORT],
        run_config={"ops": {OP: {"config": {"transformers": transformers}}}},
    ) as result:
        assert result.success
        return [e.step_key for e in result.all_events if e.event_type_value == "STEP_START"]


def test_the_skip_cached_executor_plans_the_transformed_instances(
    further_tmp_root, dagster_instance, calls
):
    assert _skip_run(dagster_instance, {"fit/data": "Rescale"}) == [OP]
    assert calls.count("report") == 1
    assert _skip_run(dagster_instance, {"fit/data": "Rescale"}) == []  # stored: not started
    other = {"fit/data": {"transformer": "Rescale", "specs": {"factor": 2.0}}}
    assert _skip_run(dagster_instance, other) == [OP]  # another instance: it runs
    assert calls.count("report") == 2 and calls.count("data") == 3
