"""A damaged upstream in a Dagster run: the dependent's step fails, commits nothing, and the next
run recomputes the upstream (the issue saw a wrong result committed and the run report SUCCESS).
"""

import dagster as dg
import pytest

from further_dagster.dagster import location_of
from tests.dagster import defs_module

pytestmark = pytest.mark.dagster

SRC = dg.AssetKey(["dag_demo", "src"])
POWER = dg.AssetKey(["dag_demo", "power"])


@pytest.fixture
def defs(further_tmp_root):
    return defs_module.defs


def _materialize(defs, instance, *keys, partition_key=None, selection=None):
    by_key = {a.key: a for a in defs.assets}
    return dg.materialize(
        [by_key[k] for k in keys],
        instance=instance,
        resources=defs.resources,
        partition_key=partition_key,
        selection=selection,
        raise_on_error=False,
    )


def test_a_step_reading_a_damaged_upstream_fails_and_the_next_run_recomputes_it(
    defs, dagster_instance, calls
):
    location = location_of(defs)
    store = location.store()
    (src,) = location.asset_by_key[SRC].instances[None]
    power_asset = location.asset_by_key[POWER]
    pk = next(k for k, label in power_asset.partitions.labels.items() if label == "p=2")
    (power,) = power_asset.instances[pk]

    assert _materialize(defs, dagster_instance, SRC).success
    values = store.instance_dir("dag_demo", "src", src.key) / "result" / "values.json"
    assert values.read_text() == "[0, 1, 2, 3]"
    values.write_text("[0, 1, 2, 9]")  # same size, valid JSON, wrong data

    failed = _materialize(defs, dagster_instance, SRC, POWER, partition_key=pk, selection=[POWER])
    assert not failed.success
    messages = " ".join(
        str(e.event_specific_data.error.message)
        for e in failed.all_events
        if e.event_type == dg.DagsterEventType.STEP_FAILURE
    )
    assert "CorruptInputError" in messages or "is damaged" in messages
    assert not store.is_stored("dag_demo", "power", power.key)  # nothing wrong committed
    assert not store.is_stored("dag_demo", "src", src.key)  # moved aside
    assert calls.count("power") == 0

    again = _materialize(defs, dagster_instance, SRC, POWER, partition_key=pk, selection=[POWER])
    assert again.success
    assert store.load("dag_demo", "power", power.key) == {"values": [0, 1, 4, 9]}
    assert calls.count("src") == 2 and calls.count("power") == 1


def test_build_definitions_trust_reaches_the_store(further_tmp_root):
    from further_dagster import build_definitions

    location = location_of(build_definitions(defs_module.dag_demo, trust=["lib"]))
    assert location.store().trust == {"lib", "dag_demo"}
    assert location_of(defs_module.defs).store().trust == {"dag_demo"}
