"""DYN children a step's make() called: listed in the step's metadata and materialized on
their own asset."""

import dagster as dg
import pytest

from further_dagster import build_definitions
from tests.engine import dyn_cells

pytestmark = pytest.mark.dagster

SEARCH = dg.AssetKey(["dyn", "search"])
FIT = dg.AssetKey(["dyn", "fit"])


def test_runtime_children_are_recorded(further_tmp_root, dagster_instance):
    defs = build_definitions(
        dyn_cells.dyn,
        calls=[("dyn.search", {}), ("dyn.fit", {"alpha": 0.5, "n": 2})],
        executor=dg.in_process_executor,
        release_sensor_interval=None,
    )
    search = [a for a in defs.assets if SEARCH in a.keys]
    assert dg.materialize(search, instance=dagster_instance, resources=defs.resources).success
    meta = dagster_instance.get_latest_materialization_event(SEARCH).asset_materialization.metadata
    children = meta["further/runtime_calls"].value
    assert [c["edge"] for c in children] == ["fit"] * 5
    assert all(c["cell"] == "dyn.fit" and c["computed"] for c in children)
    fits = dagster_instance.fetch_materializations(FIT, limit=10).records
    keys = {r.asset_materialization.metadata["further/logic_key"].value for r in fits}
    assert keys == {c["key"] for c in children}
    assert {r.asset_materialization.metadata["further/runtime_caller"].value for r in fits} == {
        next(iter(fits)).asset_materialization.metadata["further/runtime_caller"].value
    }
