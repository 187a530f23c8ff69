"""Archived project versions in Dagster: their cells are their own assets, keyed
`[project_v<version>, cell]` in the project's group, beside the current version's."""

import dagster as dg
import pytest

from further_dagster import Session
from tests.dagster.project_version_defs import dag_app, dag_lib, defs

pytestmark = pytest.mark.dagster

OLD = dg.AssetKey(["dag_lib_v1_4", "fit"])
NEW = dg.AssetKey(["dag_lib", "fit"])
USE = dg.AssetKey(["dag_app", "use"])


def test_an_archived_project_version_has_its_own_assets(further_tmp_root, dagster_instance):
    graph = defs.resolve_asset_graph()
    assert {OLD, NEW, USE} <= graph.get_all_asset_keys()
    assert graph.get(OLD).group_name == graph.get(NEW).group_name == "dag_lib"
    assert graph.get(USE).parent_keys == {OLD}  # the caller's range picked 1.4
    result = dg.materialize(list(defs.assets), instance=dagster_instance, resources=defs.resources)
    assert result.success
    old = dagster_instance.get_latest_materialization_event(OLD).asset_materialization
    new = dagster_instance.get_latest_materialization_event(NEW).asset_materialization
    assert old.metadata["further/logic_key"].value != new.metadata["further/logic_key"].value
    # a Session finds what Dagster stored, under the same addresses and keys
    session = Session(dag_lib, dag_app, root=further_tmp_root, progress=False)
    assert session.plan("dag_app.use").missing == []
    assert session.call("dag_app.use").impl == "app+lib1.4:1.0"
    assert session.call("dag_lib@1.4.fit").key == old.metadata["further/logic_key"].value
    assert session.call("dag_lib.fit").key == new.metadata["further/logic_key"].value
