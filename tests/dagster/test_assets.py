"""Cells as Dagster assets, materialized in process against a real (temporary) instance."""

import dagster as dg
import pytest

from further_dagster import Session
from further_dagster.dagster import location_of
from tests.dagster import defs_module
from tests.dagster.defs_module import dag_demo

pytestmark = pytest.mark.dagster

SRC = dg.AssetKey(["dag_demo", "src"])
POWER = dg.AssetKey(["dag_demo", "power"])
SUMMARY = dg.AssetKey(["dag_demo", "summary"])
CONSUMER = dg.AssetKey(["dag_demo", "plain_consumer"])


@pytest.fixture
def instance(dagster_instance):
    return dagster_instance  # SQLite and PostgreSQL storage (tests/conftest.py)


@pytest.fixture
def defs(further_tmp_root):
    return defs_module.defs


def _assets(defs, *keys):
    by_key = {a.key: a for a in defs.assets}
    return [by_key[k] for k in keys]


def _meta(instance, key, partition=None):
    event = (
        instance.get_latest_materialization_event(key)
        if partition is None
        else next(
            e
            for e in reversed(instance.fetch_materializations(key, limit=100).records)
            if e.asset_materialization.partition == partition
        ).event_log_entry
    )
    return event.asset_materialization.metadata


def _materialize(defs, instance, *keys, partition_key=None, selection=None):
    return dg.materialize(
        _assets(defs, *keys),
        instance=instance,
        resources=defs.resources,
        partition_key=partition_key,
        selection=selection,
    )


def test_one_asset_per_cell_with_lineage(defs):
    graph = defs.resolve_asset_graph()
    assert {SRC, POWER, SUMMARY} <= graph.get_all_asset_keys()
    src, power, summary = (graph.get(k) for k in (SRC, POWER, SUMMARY))
    assert src.group_name == "dag_demo"
    assert src.code_version == "3"
    assert src.description.startswith("The source numbers.")
    assert set(power.parent_keys) == {SRC}
    assert set(summary.parent_keys) == {POWER}
    assert src.partitions_def is None and summary.partitions_def is None
    keys = power.partitions_def.get_partition_keys()
    # partition keys say which instance is which, and the description lists them too
    assert keys == ["p=1", "p=2", "p=3"]
    for p in (1, 2, 3):
        assert f"p={p}" in power.description
    # each partition is the instance a Session computes for the same values
    asset = location_of(defs).asset_by_key[POWER]
    session_keys = [
        r.key for r in Session(progress=False).plan("dag_demo.power", p=dg_var([1, 2, 3])).roots
    ]
    assert [asset.instances[k][0].key for k in keys] == session_keys


def dg_var(values):
    from further_dagster import VAR

    return VAR(values)


def test_materialize_records_metadata_and_second_run_is_a_cache_hit(defs, instance, calls):
    result = _materialize(defs, instance, SRC)
    assert result.success
    meta = _meta(instance, SRC)
    assert meta["further/cache"].value == "miss"
    key = meta["further/logic_key"].value
    assert len(key) == 32
    assert meta["further/specs"].value == {"n": 4}
    assert meta["further/artifact_path"].value.endswith(f"dag_demo/src/{key}")
    assert meta["further/make_seconds"].value >= 0
    assert calls.count("src") == 1
    event = instance.get_latest_materialization_event(SRC)
    assert event.asset_materialization.tags["dagster/data_version"] == key

    assert _materialize(defs, instance, SRC).success
    assert _meta(instance, SRC)["further/cache"].value == "hit"
    assert calls.count("src") == 1


def test_session_and_dagster_share_results(defs, instance, calls):
    session = Session(progress=False)
    from_session = session.call("dag_demo.src")
    assert _materialize(defs, instance, SRC).success
    assert _meta(instance, SRC)["further/cache"].value == "hit"
    assert _meta(instance, SRC)["further/logic_key"].value == from_session.key
    # and the other way round: Dagster computes, the session loads
    assert _materialize(
        defs, instance, SRC, POWER, partition_key=_pk(defs, 2), selection=[POWER]
    ).success
    assert session.call("dag_demo.power", p=2).values == [0, 1, 4, 9]
    assert calls.count("power") == 1


def _pk(defs, p):
    asset = location_of(defs).asset_by_key[POWER]
    return next(k for k, label in asset.partitions.labels.items() if label == f"p={p}")


def test_partition_materializes_exactly_its_instance(defs, instance, calls):
    _materialize(defs, instance, SRC)
    assert _materialize(defs, instance, POWER, partition_key=_pk(defs, 3)).success
    assert calls.count("power") == 1
    meta = _meta(instance, POWER, _pk(defs, 3))
    assert meta["further/specs"].value == {"p": 3}
    assert meta["further/cache"].value == "miss"


def test_missing_upstream_is_computed_in_the_step(defs, instance, calls):
    assert _materialize(defs, instance, POWER, partition_key=_pk(defs, 1)).success
    assert calls.count("src") == 1 and calls.count("power") == 1
    # the upstream work is recorded on its own asset, with its own metadata and versions
    upstream = instance.get_latest_materialization_event(SRC).asset_materialization
    assert upstream.metadata["further/computed_by_step"].value == "dag_demo__power"
    assert upstream.metadata["further/cache"].value == "miss"
    assert upstream.tags["dagster/data_version"] == upstream.metadata["further/logic_key"].value


def test_plain_asset_reads_a_cell_through_the_io_manager(defs, instance):
    for p in (1, 2, 3):
        assert _materialize(defs, instance, POWER, partition_key=_pk(defs, p)).success
    assert _materialize(defs, instance, SUMMARY).success
    result = _materialize(defs, instance, SUMMARY, CONSUMER, selection=[CONSUMER])
    assert result.success
    assert result.output_for_node("dag_demo__plain_consumer") == 0 + 1 + 8 + 27


def test_failing_make_fails_the_step_with_the_traceback(instance, further_tmp_root):
    from further_dagster import build_definitions

    failing = build_definitions(dag_demo, calls=[("dag_demo.power", {"p": 99})])
    asset = next(a for a in failing.assets if a.key == POWER)
    result = dg.materialize(
        [asset], instance=instance, resources=failing.resources, raise_on_error=False
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    error = failure.step_failure_data.error
    assert "p=99 is not allowed" in error.message
    user_meta = failure.step_failure_data.user_failure_data.metadata
    assert "ValueError: p=99 is not allowed" in user_meta["further/traceback"].value
    assert "Traceback" in user_meta["further/traceback"].value


def test_run_config_selects_an_instance_by_its_specs(defs, instance, calls):
    """Launchpad / --config-json: `{"n": 5}` under the asset's op picks that instance."""
    result = dg.materialize(
        _assets(defs, SRC),
        instance=instance,
        resources=defs.resources,
        run_config={"ops": {"dag_demo__src": {"config": {"n": 5}}}},
    )
    assert result.success
    meta = _meta(instance, SRC)
    assert meta["further/specs"].value == {"n": 5} and meta["further/cache"].value == "miss"
    # the same instance a Session gets for the same values: stored, so nothing is computed
    from_session = Session(progress=False).call("dag_demo.src", n=5)
    assert meta["further/logic_key"].value == from_session.key
    assert from_session.values == [0, 1, 2, 3, 4] and calls.count("src") == 1


def test_a_wrong_spec_in_run_config_fails_before_the_run(defs, instance):
    with pytest.raises(dg.DagsterInvalidConfigError, match="n"):
        dg.materialize(
            _assets(defs, SRC),
            instance=instance,
            resources=defs.resources,
            run_config={"ops": {"dag_demo__src": {"config": {"n": "many"}}}},
        )
    with pytest.raises(dg.DagsterInvalidConfigError, match="samples"):
        dg.materialize(
            _assets(defs, SRC),
            instance=instance,
            resources=defs.resources,
            run_config={"ops": {"dag_demo__src": {"config": {"samples": 3}}}},
        )


def test_a_large_sweep_lists_its_first_partitions_in_the_description(further_registry):
    import further_dagster as fd
    from further_dagster import VAR, Cell, Project, Req, build_definitions
    from further_dagster.dagster.assets import DESCRIBED_PARTITIONS

    wide = Project("wide_sweep")

    class Point(Cell, project=wide):
        class Specs(fd.Specs):
            x: int = 0

        contributions = {"value": int}

        def make(self):
            return {"value": self.specs.x}

    class Total(Cell, project=wide):
        req_cells = {"points": Req("point", x=VAR(list(range(DESCRIBED_PARTITIONS + 10))))}
        contributions = {"total": int}

        def make(self):
            return {"total": sum(p.value for p in self.inputs["points"])}

    defs = build_definitions(wide)
    point = defs.resolve_asset_graph().get(dg.AssetKey(["wide_sweep", "point"]))
    assert len(point.partitions_def.get_partition_keys()) == DESCRIBED_PARTITIONS + 10
    # the description (sent with every snapshot) names the first partitions, then a count
    assert "| `x=0` | x=0 |" in point.description
    assert f"`x={DESCRIBED_PARTITIONS}`" not in point.description
    assert "| ... | 10 more partition(s) |" in point.description


def test_cells_with_alike_specs_share_one_config_schema_and_each_keeps_its_instance(
    further_registry, further_tmp_root, instance
):
    """Generated cells whose Specs read alike share one op config field (Dagster converts it
    once per build, not once per asset); each asset's config still picks its own instance, and
    a cell with other fields gets its own schema."""
    from further_dagster import Cell, Project, Specs, build_definitions

    gen = Project("gen_alike")
    for i in range(3):
        attrs = {
            "__module__": __name__,
            "Specs": type("Specs", (Specs,), {"__annotations__": {"i": int}, "i": i}),
            "contributions": {"value": int},
            "make": lambda self: {"value": self.specs.i * 10},
        }
        type(f"Gen{i}", (Cell,), attrs, project=gen, name=f"g{i}")
    other = {
        "__module__": __name__,
        "Specs": type("Specs", (Specs,), {"__annotations__": {"j": str}, "j": "a"}),
        "contributions": {"value": int},
        "make": lambda self: {"value": len(self.specs.j)},
    }
    type("Other", (Cell,), other, project=gen, name="other")

    defs = build_definitions(gen, asset_checks=False)
    by_name = {a.key.path[-1]: a for a in defs.assets}
    fields = {n: a.op.config_schema.as_field() for n, a in by_name.items()}
    assert fields["g0"] is fields["g1"] is fields["g2"]
    assert fields["other"] is not fields["g0"] and set(fields["other"].config_type.fields) == {"j"}

    g1 = dg.AssetKey(["gen_alike", "g1"])
    result = dg.materialize(
        [by_name["g1"]],
        instance=instance,
        resources=defs.resources,
        run_config={"ops": {"gen_alike__g1": {"config": {"i": 7}}}},
    )
    assert result.success
    assert _meta(instance, g1)["further/specs"].value == {"i": 7}
    with pytest.raises(dg.DagsterInvalidConfigError, match="i"):
        dg.materialize(
            [by_name["g2"]],
            instance=instance,
            resources=defs.resources,
            run_config={"ops": {"gen_alike__g2": {"config": {"i": "seven"}}}},
        )
    # the other assets' definition metadata is their own (versions shown once per value)
    meta = by_name["g2"].specs_by_key[dg.AssetKey(["gen_alike", "g2"])].metadata
    assert meta["further/spec_defaults"].value == {"i": 2}
    assert meta["further/logic_version"].value == "1"
