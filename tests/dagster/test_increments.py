"""An incrementing cell as a Dagster asset: runs to the requested increment, resumes."""

import dagster as dg
import pytest

from further_dagster import Increments, Session
from tests.dagster.increment_defs import dag_inc, defs

pytestmark = pytest.mark.dagster

WALK = dg.AssetKey(["dag_inc", "walk"])


def _run(instance, config=None):
    return dg.materialize(
        list(defs.assets), instance=instance, resources=defs.resources, run_config=config
    )


def _meta(instance):
    return instance.get_latest_materialization_event(WALK).asset_materialization.metadata


def test_a_materialization_runs_to_the_requested_increment_and_resumes(
    further_tmp_root, dagster_instance, calls
):
    assert _run(dagster_instance).success  # the cell's own instruction: at least 3
    assert _meta(dagster_instance)["further/increments"].value == 3
    assert calls.count("walk") == 3
    more = {"ops": {"dag_inc__walk": {"config": {"increments": {"exactly": 5}}}}}
    assert _run(dagster_instance, more).success
    assert _meta(dagster_instance)["further/increments"].value == 5
    assert calls.count("walk") == 5  # resumed from increment 3
    session = Session(dag_inc, root=further_tmp_root, progress=False)
    result = session.call("dag_inc.walk", increments=Increments(best=True))
    assert result.increment == 5 and result.total == 15
    assert _meta(dagster_instance)["further/logic_key"].value == result.key
