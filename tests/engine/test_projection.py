"""Cells onto assets and partitions, planned without Dagster (engine/projection.py)."""

import pytest

from further_dagster import VAR, Cell, Project, Req, Specs
from further_dagster.core.graph import DefinitionGraph
from further_dagster.engine.projection import PARTITION_KEY_CHARS, Projection, partition_keys
from further_dagster.errors import UnknownPartitionError

pytestmark = pytest.mark.unit

proj = Project("proj_plan")


class Data(Cell, project=proj):
    class Specs(Specs):
        n: int = 3

    contributions = {"x": list}

    def make(self):
        return {"x": list(range(self.specs.n))}


class Fit(Cell, project=proj):
    class Specs(Specs):
        alpha: float = 1.0

    req_cells = {"data": Req("data")}
    contributions = {"w": float}

    def make(self):
        return {"w": self.specs.alpha}


class Score(Cell, project=proj):
    """One score per fit: lines up with the fits partition by partition."""

    class Specs(Specs):
        alpha: float = 1.0

    req_cells = {"fit": Req("fit")}
    contributions = {"s": float}

    def make(self):
        return {"s": self.inputs["fit"].w}


class Report(Cell, project=proj):
    req_cells = {"fits": Req("fit", alpha=VAR([0.1, 1.0, 10.0]))}
    contributions = {"n": int}

    def make(self):
        return {"n": len(self.inputs["fits"])}


def test_a_swept_cell_is_partitioned_one_partition_per_instance():
    graph = DefinitionGraph([proj])
    projection = Projection(graph, [(Report, {})])
    fit = projection.asset(Fit)
    assert fit.partitions is not None and len(fit.partitions.keys) == 3
    keys = fit.partitions.keys
    # keys say which alpha is which
    assert keys == ["alpha=0.1", "alpha=1.0", "alpha=10.0"]
    by_pk = {pk: insts[0] for pk, insts in fit.instances.items()}
    assert {pk: i.specs.alpha for pk, i in by_pk.items()} == {
        k: a for k, a in zip(keys, [0.1, 1.0, 10.0], strict=True)
    }
    assert sorted(fit.partitions.labels.values()) == ["alpha=0.1", "alpha=1.0", "alpha=10.0"]
    # single-instance cells are unpartitioned; the report depends on every fit partition
    assert projection.asset(Data).partitions is None
    assert projection.asset(Report).partitions is None
    assert projection.asset(Report).upstream == {Fit: None}


def test_instances_for_by_partition_and_unknown_partitions():
    graph = DefinitionGraph([proj])
    projection = Projection(graph, [(Report, {})])
    actual = projection.actual_instances()
    fit = projection.asset(Fit)
    first = fit.partitions.keys[0]
    chosen = projection.instances_for(Fit, [first], actual)
    assert list(chosen) == [first] and chosen[first][0].specs.alpha == 0.1
    assert len(projection.instances_for(Fit, None, actual)) == 3
    assert list(projection.instances_for(Data, None, actual)) == [None]
    with pytest.raises(UnknownPartitionError, match="proj_plan.fit has no partition"):
        projection.instances_for(Fit, ["alpha=2.0"], actual)


def test_without_resource_cells_the_actual_instances_are_the_planned_ones():
    graph = DefinitionGraph([proj])
    projection = Projection(graph, [(Report, {})])
    assert not projection.has_resources
    actual = projection.actual_instances()
    assert {i.key for i in actual.values()} == {i.key for i in projection.instances}


def test_partition_keys_are_values_made_safe_and_unique_only_where_needed():
    graph = DefinitionGraph([proj])
    projection = Projection(graph, [(Report, {})])
    fits = projection.asset(Fit).instances
    insts = [fits[k][0] for k in projection.asset(Fit).partitions.keys]
    assert partition_keys(insts) == ["alpha=0.1", "alpha=1.0", "alpha=10.0"]
    # one instance: no field differs, the key is the structural-key prefix
    (one,) = projection.asset(Data).instances[None]
    assert partition_keys([one]) == [one.skey[:PARTITION_KEY_CHARS]]
    # values that collide (they differ upstream only) or that Dagster refuses in keys
    from types import SimpleNamespace

    class S(Specs):
        tag: str = ""
        alpha: float = 1.0

    def inst(tag, alpha, skey):
        return SimpleNamespace(specs=S(tag=tag, alpha=alpha), skey=skey)

    made = partition_keys(
        [
            inst("a,b|c[1]", 1.0, "1" * 32),
            inst("x...y", 1.0, "2" * 32),
            inst("x...y", 2.0, "3" * 32),
        ]
    )
    assert made == ["tag=a;b/c(1)&alpha=1.0", "tag=x..y&alpha=1.0", "tag=x..y&alpha=2.0"]
    same = partition_keys(
        [inst("a", 1.0, "1" * 32), inst("a", 1.0, "2" * 32), inst("b", 1.0, "3" * 32)]
    )
    assert same == ["tag=a@" + "1" * 12, "tag=a@" + "2" * 12, "tag=b"]
