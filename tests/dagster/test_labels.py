"""A code location under project_inits.yaml labels: assets, metadata, and a run's own labels."""

import dagster as dg
import pytest

from further_dagster import Session
from tests.dagster.label_defs import dag_labels, defs_for

pytestmark = pytest.mark.dagster

DATA = dg.AssetKey(["dag_labels", "data"])
TOTAL = dg.AssetKey(["dag_labels", "total"])


def _materialize(defs, instance, run_config=None):
    return dg.materialize(
        list(defs.assets),
        instance=instance,
        resources=defs.resources,
        run_config=run_config,
    )


def _meta(instance, key):
    return instance.get_latest_materialization_event(key).asset_materialization.metadata


@pytest.mark.parametrize("label, total", [("fast", 1), ("thorough", 15)])
def test_a_location_under_a_label_computes_what_a_session_finds(
    label, total, further_tmp_root, dagster_instance
):
    defs = defs_for(label)
    assert _materialize(defs, dagster_instance).success
    meta = _meta(dagster_instance, TOTAL)
    assert meta["further/labels"].value == [label]
    session = Session(dag_labels, root=further_tmp_root, progress=False)
    result = session.call("dag_labels.total", project_init_label=label)
    assert result.total == total
    assert meta["further/logic_key"].value == result.key
    assert session.plan("dag_labels.total", project_init_label=label).missing == []
    recorded = session.query(f"SELECT labels FROM instances WHERE key = '{result.key}'")
    assert recorded.values.tolist() == [[f'["{label}"]']]  # the record knows the label too


def test_two_labels_share_what_they_agree_on(further_tmp_root, dagster_instance, calls):
    assert _materialize(defs_for(None), dagster_instance).success
    assert _materialize(defs_for("fast"), dagster_instance).success
    assert calls.count("data") == 2 and calls.count("total") == 2
    assert _materialize(defs_for("fast"), dagster_instance).success  # all stored
    assert calls.count("data") == 2


def test_a_run_picks_labels_in_its_op_config(further_tmp_root, dagster_instance):
    defs = defs_for("fast")
    config = {"ops": {"dag_labels__total": {"config": {"project_init_label": "thorough"}}}}
    result = dg.materialize(
        [a for a in defs.assets if TOTAL in a.keys],
        instance=dagster_instance,
        resources=defs.resources,
        run_config=config,
    )
    assert result.success
    session = Session(dag_labels, root=further_tmp_root, progress=False)
    thorough = session.plan("dag_labels.total", project_init_label="thorough").roots[0]
    assert _meta(dagster_instance, TOTAL)["further/logic_key"].value == thorough.key
    assert session.plan("dag_labels.total", project_init_label="thorough").missing == []


def test_a_run_picks_labels_with_its_tag(further_tmp_root, dagster_instance):
    defs = defs_for(None)
    result = dg.materialize(
        list(defs.assets),
        instance=dagster_instance,
        resources=defs.resources,
        tags={"further/init_label": "thorough"},
    )
    assert result.success
    meta = _meta(dagster_instance, TOTAL)
    assert meta["further/labels"].value == ["thorough"]
    session = Session(dag_labels, root=further_tmp_root, progress=False)
    assert session.plan("dag_labels.total", project_init_label="thorough").missing == []


def test_a_labels_freshness_applies_in_a_location_and_under_a_run_tag(
    further_tmp_root, dagster_instance
):
    """`pinned` says `feed: present`: a location compiled under it, or a run tagged with it,
    keeps the stored release after the feed moved on; without the label, the new one."""
    from tests.dagster.label_fresh_defs import RELEASE, fresh_defs

    use = dg.AssetKey(["dag_lfresh", "use"])

    def release_of(defs, tags=None):
        result = dg.materialize(
            list(defs.assets), instance=dagster_instance, resources=defs.resources, tags=tags
        )
        assert result.success
        return list(_meta(dagster_instance, use)["further/releases"].value.values())

    try:
        assert release_of(fresh_defs()) == ["r1"]
        RELEASE["now"] = "r2"
        assert release_of(fresh_defs("pinned")) == ["r1"]
        assert release_of(fresh_defs(), tags={"further/init_label": "pinned"}) == ["r1"]
        assert release_of(fresh_defs()) == ["r2"]
    finally:
        RELEASE["now"] = "r1"
