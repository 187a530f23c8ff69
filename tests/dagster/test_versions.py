"""Archived versions in Dagster: their own asset in the same group, compared side by side."""

import dagster as dg
import pytest

from further_dagster import Session
from tests.dagster.version_defs import dag_versions, defs

pytestmark = pytest.mark.dagster

OLD = dg.AssetKey(["dag_versions", "fit_v1_4"])
NEW = dg.AssetKey(["dag_versions", "fit"])
COMPARE = dg.AssetKey(["dag_versions", "compare"])


def test_an_archived_version_is_its_own_asset(further_tmp_root, dagster_instance):
    graph = defs.resolve_asset_graph()
    assert {OLD, NEW, COMPARE} <= graph.get_all_asset_keys()
    assert graph.get(OLD).group_name == graph.get(NEW).group_name == "dag_versions"
    assert graph.get(COMPARE).parent_keys == {OLD, NEW}
    result = dg.materialize(list(defs.assets), instance=dagster_instance, resources=defs.resources)
    assert result.success
    old = dagster_instance.get_latest_materialization_event(OLD).asset_materialization
    new = dagster_instance.get_latest_materialization_event(NEW).asset_materialization
    assert old.metadata["further/logic_key"].value != new.metadata["further/logic_key"].value
    session = Session(dag_versions, root=further_tmp_root, progress=False)
    assert session.call("dag_versions.compare").both == "v1:1.0|v2:1.0"
    assert session.plan("dag_versions.compare").missing == []
