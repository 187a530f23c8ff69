"""A session-level sweep shares one Resolver across its combinations: every root, key and
instance must equal what a Resolver per combination gives (the reference below)."""

import itertools

import pytest

from further_dagster import VAR
from further_dagster.core.instances import CallContext, Resolver
from further_dagster.engine.sweep import SessionSweep
from tests.engine.cells import engine_demo  # noqa: F401 - registers the cells

pytestmark = pytest.mark.unit


def _reference(session, cell, *, specs=None, params=None, opts=None, **values):
    """One Resolver per combination, expanded by hand (the pre-sharing behaviour)."""
    target = session.plan(cell, specs=specs, params=params, opts=opts, **values).roots[0].cell
    graph = session.graph_for(target)
    axes = []  # (kind, group, name, options)
    for name, v in values.items():
        axes.append(("values", None, name, v))
    for name, v in (params or {}).items():
        axes.append(("params", target.project.name, name, v))
    for group, inner in (specs or {}).items():
        for name, v in inner.items():
            axes.append(("specs", group, name, v))
    options = [a[3].values if isinstance(a[3], VAR) else (a[3],) for a in axes]
    roots = []
    for combo in itertools.product(*options):
        root_values, ps, ss = {}, {}, {}
        for (kind, group, name, _), v in zip(axes, combo, strict=True):
            if kind == "values":
                root_values[name] = v
            else:
                (ps if kind == "params" else ss).setdefault(group, {})[name] = v
        context = CallContext(params=ps, specs=ss, opts=opts or {})
        roots.append(
            Resolver(graph, context).instance(
                target, root_values, root_opts=(opts or {}).get(target.full_name)
            )
        )
    return roots


@pytest.mark.parametrize(
    "call",
    [
        {"factor": VAR([1.0, 2.0])},
        {"specs": {"engine_demo.base": {"n": VAR([1, 2, 3])}}, "factor": VAR([1.0, 2.0])},
        {"params": {"seed": VAR([0, 5])}, "factor": VAR([1.0, 3.0])},
        {
            "params": {"seed": VAR([0, 5])},
            "specs": {"engine_demo.base": {"n": VAR([2, 4])}, "engine_demo.scaled": {}},
            "factor": 4.0,
        },
        {"specs": {"engine_demo.scaled": {"factor": VAR([1.0, 2.0])}}},
        {
            "specs": {"engine_demo.base": {"n": VAR([1, 2])}},
            "opts": {"engine_demo.base": {"verbose": True}},
        },
    ],
)
def test_shared_resolver_equals_one_resolver_per_combination(further_session, call):
    plan = further_session.plan("engine_demo.scaled", **call)
    reference = _reference(further_session, "engine_demo.scaled", **call)
    assert [r.key for r in plan.roots] == [r.key for r in reference]
    assert [r.skey for r in plan.roots] == [r.skey for r in reference]
    for ours, theirs in zip(plan.roots, reference, strict=True):
        assert ours.specs == theirs.specs and ours.opts == theirs.opts
        assert ours.dep_keys() == theirs.dep_keys()
        assert ours.deps["base"].specs == theirs.deps["base"].specs
        assert ours.deps["base"].opts == theirs.deps["base"].opts


def test_a_sweep_over_an_addressed_upstream_shares_equal_instances(further_session):
    plan = further_session.plan(
        "engine_demo.scaled",
        specs={"engine_demo.base": {"n": VAR([1, 2])}},
        factor=VAR([1.0, 2.0, 3.0]),
    )
    assert len(plan.roots) == 6 and len({r.key for r in plan.roots}) == 6
    bases = {r.deps["base"].key: r.deps["base"] for r in plan.roots}
    assert len(bases) == 2 and len(plan.instances) == 8
    # root values vary slowest (factor, then n): equal upstream instances are one object
    assert plan.roots[0].deps["base"] is plan.roots[2].deps["base"]
    assert plan.roots[0].deps["base"].specs.n == 1 and plan.roots[1].deps["base"].specs.n == 2


def test_combinations_resolve_with_the_root_values_fastest_and_keep_their_positions(
    further_session,
):
    target = further_session.plan("engine_demo.scaled").roots[0].cell
    graph = further_session.graph_for(target)
    sweep = SessionSweep(
        graph,
        target,
        {"factor": VAR([1.0, 2.0, 3.0])},
        {},
        {"engine_demo.base": {"n": VAR([1, 2])}},
    )
    count, combos = sweep.combos()
    seen = list(combos)
    assert count == 6 and sorted(position for position, *_ in seen) == list(range(6))
    # resolution order: n (a context VAR) slowest, factor (a root value) fastest
    assert [(s["engine_demo.base"]["n"], v["factor"]) for _, v, _, s, _ in seen] == [
        (n, f) for n in (1, 2) for f in (1.0, 2.0, 3.0)
    ]
    # positions follow the call's expansion order: factor (the first VAR) slowest
    by_position = {p: (v["factor"], s["engine_demo.base"]["n"]) for p, v, _, s, _ in seen}
    assert [by_position[p] for p in range(6)] == [(f, n) for f in (1.0, 2.0, 3.0) for n in (1, 2)]
    # one run of root values shares one specs dict and one tags dict: one context each
    assert len({id(s) for *_, s, _ in seen}) == 2 and len({id(t) for *_, t in seen}) == 2


def test_a_sweep_without_root_vars_or_without_any_var_yields_every_position_once(
    further_session,
):
    target = further_session.plan("engine_demo.scaled").roots[0].cell
    graph = further_session.graph_for(target)
    plain = SessionSweep(graph, target, {"factor": 2.0}, {}, {})
    count, combos = plain.combos()
    assert count == 1 and [(p, v) for p, v, *_ in combos] == [(0, {"factor": 2.0})]
    upstream = SessionSweep(
        graph, target, {"factor": 2.0}, {}, {"engine_demo.base": {"n": VAR([1, 2, 3])}}
    )
    count, combos = upstream.combos()
    seen = list(combos)
    assert count == 3 and [p for p, *_ in seen] == [0, 1, 2]
    assert len({id(v) for _, v, *_ in seen}) == 1  # the root values never change: one dict
