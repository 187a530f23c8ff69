"""Issue #13 items 3-4: what the planning and repeat-call shortcuts must never change.

Shared Specs models, the resolver's own instance order, one context per run of combinations
that differ only in root values, the cached results of a repeat call, `Session.stream`, and one
heartbeat thread for every lease of a process: each must give what the plain path gives.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from further_dagster import VAR, Cell, Project, Req, Session, Specs
from further_dagster.core.hashing import plain_token
from further_dagster.core.instances import CallContext, Resolver, walk
from further_dagster.core.validated import Validated
from further_dagster.errors import CorruptArtifactError
from further_dagster.store.lease import Lease

pytestmark = pytest.mark.unit


@pytest.fixture
def grid(further_registry: Any) -> dict[str, Any]:
    """a(x) <- b(y) <- c(z), each cell returning its own field, counting its make() calls."""
    project = Project("gridt", description="a three-level grid")
    calls = {"a": 0, "b": 0, "c": 0}

    class A(Cell, project=project, name="a"):
        """Level 1."""

        class Specs(Specs):
            x: int = 0

        contributions = {"v": int}

        def make(self) -> dict[str, Any]:
            calls["a"] += 1
            return {"v": self.specs.x}

    class B(Cell, project=project, name="b"):
        """Level 2."""

        class Specs(Specs):
            y: int = 0

        req_cells = {"a": Req("a")}
        contributions = {"v": int}

        def make(self) -> dict[str, Any]:
            calls["b"] += 1
            return {"v": self.inputs["a"].v * 100 + self.specs.y}

    class C(Cell, project=project, name="c"):
        """Level 3, with a list contribution (mutable) beside an int."""

        class Specs(Specs):
            z: int = 0

        req_cells = {"b": Req("b")}
        contributions = {"v": int, "trail": list}

        def make(self) -> dict[str, Any]:
            calls["c"] += 1
            v = self.inputs["b"].v * 100 + self.specs.z
            return {"v": v, "trail": [v]}

    return {"calls": calls, "A": A, "C": C}


GRID_CALL: dict[str, Any] = {
    "specs": {"gridt.a": {"x": VAR([0, 1])}, "gridt.b": {"y": VAR([0, 1, 2])}},
    "z": VAR([0, 1, 2, 3]),
}


def test_a_swept_grid_keys_every_instance_as_one_resolver_per_combination_does(
    grid: dict[str, Any], further_tmp_root: Path
) -> None:
    session = Session(root=further_tmp_root, progress=False)
    plan = session.plan("gridt.c", **GRID_CALL)
    graph = session.graph_for(grid["C"])
    reference = [  # root values vary slowest, then the addressed specs in call order
        Resolver(graph, CallContext(specs={"gridt.a": {"x": x}, "gridt.b": {"y": y}})).instance(
            grid["C"], {"z": z}
        )
        for z in (0, 1, 2, 3)
        for x in (0, 1)
        for y in (0, 1, 2)
    ]
    assert [r.key for r in plan.roots] == [r.key for r in reference]
    # the resolver's own order: the instances of the walk of the roots, each key once,
    # dependencies first (resolved with the root values varying fastest, not in root order)
    keys = [i.key for i in plan.instances]
    assert len(set(keys)) == len(keys)
    assert set(keys) == {i.key for i in walk(plan.roots)}
    place = {key: at for at, key in enumerate(keys)}
    for inst in plan.instances:
        assert all(place[d.key] < place[inst.key] for d in inst.dep_instances())
    assert len(plan.instances) == 2 + 6 + 24
    # instances with equal Specs share one (frozen) model: 24 c instances, 4 distinct z
    c_specs = {id(i.specs) for i in plan.instances if i.cell is grid["C"]}
    assert len(c_specs) == 4


def test_equal_values_of_different_types_never_share_a_model(further_registry: Any) -> None:
    project = Project("typed", description="an Any field")

    class Loose(Cell, project=project, name="loose"):
        """Its field keeps whatever it is given."""

        class Specs(Specs):
            value: Any = None

        contributions = {"kind": str}

        def make(self) -> dict[str, Any]:
            return {"kind": type(self.specs.value).__name__}

    shared = Validated()
    values: list[Any] = [1, 1.0, True, "1", [1], (1,), 0.0, -0.0, {"a": 1}, {"a": 1.0}]
    specs = [shared.model(Loose.Specs, "typed.loose", {"value": v}, "Specs") for v in values]
    assert [type(s.value) for s in specs] == [type(v) for v in values]
    assert str(specs[7].value) == "-0.0" and specs[9].value == {"a": 1.0}
    assert shared.model(Loose.Specs, "typed.loose", {"value": 1}, "Specs") is specs[0]
    assert len({plain_token({"value": v}) for v in values}) == len(values)
    assert plain_token({"value": object()}) is None  # not plain data: validated every time


def test_a_repeat_call_returns_equal_results_and_copies_of_mutable_values(
    grid: dict[str, Any], further_tmp_root: Path
) -> None:
    session = Session(root=further_tmp_root, progress=False)
    first = session.call("gridt.c", **GRID_CALL)
    assert isinstance(first, list) and len(first) == 24
    assert grid["calls"] == {"a": 2, "b": 6, "c": 24}
    first[0].trail.append("changed by the caller")
    again = session.call("gridt.c", **GRID_CALL)
    assert grid["calls"] == {"a": 2, "b": 6, "c": 24}  # nothing computed
    assert [r.v for r in again] == [r.v for r in first]
    assert [r.key for r in again] == [r.key for r in first]
    assert again[0].trail == [again[0].v]  # the list was loaded anew, not the changed one


def test_a_repeat_call_sees_a_result_recomputed_or_damaged_since(
    grid: dict[str, Any], further_tmp_root: Path
) -> None:
    session = Session(root=further_tmp_root, progress=False)
    a = session.call("gridt.a", x=7)
    assert a.v == 7
    result = session.store.instance_dir("gridt", "a", a.key) / "result"

    # the result was moved aside and computed again: the new one is returned
    session.store.quarantine("gridt", "a", a.key, "a test moved it aside")
    assert session.call("gridt.a", x=7).v == 7
    assert grid["calls"]["a"] == 2

    # its manifest changed (here: an entry dropped) after a plan looked at it: the repeat call
    # looks again, loads and refuses it
    assert session.plan("gridt.a", x=7).missing == []
    manifest = result / "manifest.json"
    record = json.loads(manifest.read_text())
    record["contributions"] = {}
    manifest.write_text(json.dumps(record))
    with pytest.raises(CorruptArtifactError, match="gridt.a"):
        session.call("gridt.a", x=7)
    assert session.call("gridt.a", x=7).v == 7
    assert grid["calls"]["a"] == 3

    # a contribution's file written in place (the manifest untouched): refused, not handed out
    session.call("gridt.a", x=7)
    value = result / "v.json"
    value.write_text(value.read_text().replace("7", "8"))
    with pytest.raises(CorruptArtifactError, match="gridt.a"):
        session.call("gridt.a", x=7)
    assert session.call("gridt.a", x=7).v == 7
    assert grid["calls"]["a"] == 4


def test_a_repeat_call_follows_a_changed_declaration(
    grid: dict[str, Any], further_tmp_root: Path
) -> None:
    session = Session(root=further_tmp_root, progress=False)
    session.call("gridt.a", x=1)
    grid["A"].contributions = {"v": str}  # declared str now, stored an int
    with pytest.raises(CorruptArtifactError, match="'v' loaded as int, declared as str"):
        session.call("gridt.a", x=1)


def test_stream_yields_what_call_returns_in_the_same_order(
    grid: dict[str, Any], further_tmp_root: Path
) -> None:
    session = Session(root=further_tmp_root, progress=False)
    streamed = session.stream("gridt.c", **GRID_CALL)
    assert grid["calls"] == {"a": 2, "b": 6, "c": 24}  # computed before it returns
    assert session.last_report is not None and len(session.last_report.computed) == 32
    items = [(r.key, r.v, r.trail) for r in streamed]
    called = session.call("gridt.c", **GRID_CALL)
    assert isinstance(called, list)
    assert items == [(r.key, r.v, r.trail) for r in called]
    one = called[-1]  # z=3, x=1, y=2
    assert [(r.key, r.v) for r in session.stream("gridt.c", specs=_last(), z=3)] == [
        (one.key, one.v)
    ]


def _last() -> dict[str, dict[str, int]]:
    return {"gridt.a": {"x": 1}, "gridt.b": {"y": 2}}


def test_leases_share_one_heartbeat_that_keeps_each_alive(tmp_path: Path) -> None:
    dirs = [tmp_path / f"i{n}" for n in range(3)]
    leases = []
    for d in dirs:
        d.mkdir()
        lease = Lease(d, lease_s=0.6)
        assert lease.try_acquire() == "acquired"
        leases.append(lease)
    try:
        beating = [t for t in threading.enumerate() if t.name == "further-lease-heartbeat"]
        assert len(beating) == 1
        for d in dirs:
            before = (d / "lock").stat().st_mtime_ns
            waiter = Lease(d, lease_s=0.6)
            deadline_beats = 0
            while (d / "lock").stat().st_mtime_ns == before and deadline_beats < 100:
                threading.Event().wait(0.02)
                deadline_beats += 1
            assert (d / "lock").stat().st_mtime_ns != before  # touched by the heartbeat
            assert waiter.try_acquire() == "held"
    finally:
        for lease in leases:
            assert lease.release() is True
    assert not any((d / "lock").exists() for d in dirs)
