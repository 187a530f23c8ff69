"""The Resolver: depth, order, sharing and errors of resolution (the Instance Tree)."""

import sys

import pytest

from further_dagster import VAR, Cell, Project, Req, ResourceCell, Specs
from further_dagster.core import CallContext, DefinitionGraph, Resolver, walk
from further_dagster.errors import SpecsValidationError

pytestmark = [pytest.mark.unit, pytest.mark.usefixtures("further_registry")]


def _make(self):
    return {"v": 1}


def _chain(name: str, n: int) -> tuple[Project, type[Cell]]:
    project = Project(name)
    previous = None
    for i in range(n):
        attrs = {
            "__module__": __name__,
            "contributions": {"v": int},
            "req_cells": {"prev": Req(previous)} if previous else {},
            "make": _make,
        }
        previous = f"c{i:05d}"
        cell = type(f"C{i}", (Cell,), attrs, project=project, name=previous)
    return project, cell


def test_a_chain_of_ten_thousand_cells_resolves_without_raising_the_recursion_limit():
    project, top = _chain("res_deep", 10_000)
    graph = DefinitionGraph([project])
    saved = sys.getrecursionlimit()
    # A recursive resolver needs one or more frames per cell: 10,000 cells cannot fit in 1,000.
    sys.setrecursionlimit(1000)
    try:
        inst = Resolver(graph).instance(top)
        assert sys.getrecursionlimit() == 1000
        order = walk([inst])
    finally:
        sys.setrecursionlimit(saved)
    assert len(order) == 10_000
    assert order[0].cell.name == "c00000" and order[-1] is inst
    assert inst.deps["prev"].cell.name == "c09998"


def _ordered_project(name: str) -> tuple[Project, type[Cell]]:
    project = Project(name)

    class Feed(ResourceCell, project=project):
        class Specs(Specs):
            tag: str = "x"

        contributions = {"v": int}

        @classmethod
        def get_release(cls, specs):
            raise AssertionError("the test's lookup answers instead")

        make = _make

    class Mid(Cell, project=project):
        class Specs(Specs):
            n: int = 0

        req_cells = {"a": Req("feed", tag="a"), "b": Req("feed", tag="b")}
        contributions = {"v": int}
        make = _make

    class Top(Cell, project=project):
        req_cells = {
            "first": Req("feed", tag="first"),
            "swept": Req("mid", n=VAR([2, 1, 2])),
            "last": Req("feed", tag="a"),
        }
        contributions = {"v": int}
        make = _make

    return project, Top


def test_edges_resolve_depth_first_in_declaration_order_and_equal_instances_are_shared():
    seen: list[str] = []
    project, top = _ordered_project("res_order")

    def lookup(cell, specs):
        seen.append(specs.tag)
        return f"r-{specs.tag}"

    inst = Resolver(DefinitionGraph([project]), CallContext(release_resolver=lookup)).instance(top)
    # Releases are looked up once per (cell, values), dependencies before dependents, edges in
    # declaration order, sweep points in VAR order.
    assert seen == ["first", "a", "b"]
    swept = inst.deps["swept"]
    assert isinstance(swept, tuple) and [m.specs.n for m in swept] == [2, 1, 2]
    assert swept[0] is swept[2] and swept[0] is not swept[1]
    assert inst.deps["last"] is swept[1].deps["a"]
    assert sorted(inst.releases().values()) == ["r-a", "r-b", "r-first"]
    assert inst.skey != inst.key


def test_an_invalid_value_deep_in_the_graph_fails_naming_the_cell():
    project, top = _chain("res_bad", 5)
    graph = DefinitionGraph([project])
    resolver = Resolver(graph, CallContext(specs={"res_bad.c00001": {"nope": 1}}))
    with pytest.raises(SpecsValidationError, match="res_bad.c00001"):
        resolver.instance(top)
    # c00001's Specs fail before its own dependency is visited: nothing resolved completely.
    assert resolver._cache == {}


def test_root_opts_give_a_separate_instance_with_the_same_key():
    project, top = _chain("res_opts", 2)
    resolver = Resolver(DefinitionGraph([project]))
    plain = resolver.instance(top)
    assert resolver.instance(top) is plain
    assert resolver.instance(top, {}, root_opts={}) is plain


def test_equal_values_share_an_instance_whatever_their_order_or_spelling():
    project = Project("res_order_values")

    class Pair(Cell, project=project):
        class Specs(Specs):
            a: int = 0
            b: list[int] = []

        contributions = {"v": int}
        make = _make

    resolver = Resolver(DefinitionGraph([project]))
    first = resolver.instance(Pair, {"a": 1, "b": [2]})
    assert resolver.instance(Pair, {"a": 1, "b": [2]}) is first
    # another order, or a tuple for a list: another cache entry, the same (shared) instance
    assert resolver.instance(Pair, {"b": [2], "a": 1}) is first
    assert resolver.instance(Pair, {"a": 1, "b": (2,)}) is first
    assert resolver.instance(Pair, {"a": 2, "b": [2]}) is not first
    assert len(resolver.resolved()) == 2
