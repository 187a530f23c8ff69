"""Logic keys: pinned values, and what changes them (and what never does)."""

import json
import os
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from further_dagster.core import CallContext, DefinitionGraph, Resolver
from further_dagster.core.keys import logic_key
from tests.core.keycells import Double, Source, keys_demo

pytestmark = pytest.mark.unit
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def resolve(cell, values=None, **context):
    return Resolver(DefinitionGraph([keys_demo]), CallContext(**context)).instance(cell, values)


def test_golden_keys():
    assert resolve(Source).key == "409118f8da1eb5c057e61ae102007f00"
    assert resolve(Double).key == "2fc25d3909a4676f1e14ee352d0e53ca"


def test_keys_equal_in_separate_processes():
    code = (
        "import json\n"
        "from further_dagster.core import DefinitionGraph, Resolver\n"
        "from tests.core.keycells import Double, Source, keys_demo\n"
        "r = Resolver(DefinitionGraph([keys_demo]))\n"
        "print(json.dumps([r.instance(Source).key, r.instance(Double).key,"
        " r.instance(Source, {'scale': 0.5, 'n': 3}).key]))\n"
    )
    keys = []
    for seed in ("0", "4242"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run(
            [sys.executable, "-c", code],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
        )
        keys.append(json.loads(out.stdout))
    here = [resolve(Source).key, resolve(Double).key, resolve(Source, {"scale": 0.5, "n": 3}).key]
    assert keys[0] == keys[1] == here


def test_defaults_are_part_of_identity():
    # passing the default explicitly is the same instance
    assert resolve(Source).key == resolve(Source, {"n": 10, "scale": 1.0}).key


def test_opts_never_change_the_key():
    plain = resolve(Source)
    verbose = resolve(Source, opts={"keys_demo.source": {"verbose": True}})
    assert verbose.opts.verbose is True
    assert plain.key == verbose.key


def test_value_type_changes_the_key():
    # pydantic keeps 1.0 a float for a float field: compare int vs float through str field
    assert resolve(Double, {"label": "1"}).key != resolve(Double, {"label": "1.0"}).key


def test_project_param_enters_only_subscribers():
    base, other = resolve(Source), resolve(Source, params={"keys_demo": {"seed": 8}})
    assert base.specs.seed == 7 and other.specs.seed == 8
    assert base.key != other.key


def test_upstream_key_changes_downstream_key():
    a = resolve(Double)
    b = resolve(Double, specs={"keys_demo.source": {"scale": 2.0}})
    assert a.specs == b.specs
    assert a.deps["src"].key != b.deps["src"].key
    assert a.key != b.key


def test_logic_version_changes_the_key(monkeypatch):
    before = resolve(Source).key
    monkeypatch.setattr(Source, "logic_version", 2)
    assert resolve(Source).key != before


def test_tracked_library_versions_enter_the_key(monkeypatch):
    before = resolve(Source).key
    monkeypatch.setattr(Source, "track_libraries", ("pydantic",))
    assert resolve(Source).key != before


@settings(max_examples=100, deadline=None)
@given(
    n=st.integers(-(10**6), 10**6),
    scale=st.floats(allow_nan=False, allow_infinity=False),
    n2=st.integers(-(10**6), 10**6),
    scale2=st.floats(allow_nan=False, allow_infinity=False),
    verbose=st.booleans(),
)
def test_key_is_a_function_of_specs_only(n, scale, n2, scale2, verbose):
    a = resolve(Source, {"n": n, "scale": scale})
    again = resolve(
        Source, {"n": n, "scale": scale}, opts={"keys_demo.source": {"verbose": verbose}}
    )
    assert a.key == again.key
    b = resolve(Source, {"n": n2, "scale": scale2})
    if (n, scale) != (n2, scale2):
        assert a.key != b.key


def test_logic_key_ignores_release_policy_only_release_counts():
    specs = Source.Specs()
    assert logic_key(Source, specs, {}, "r1") == logic_key(Source, specs, {}, "r1")
    assert logic_key(Source, specs, {}, "r1") != logic_key(Source, specs, {}, "r2")
    assert logic_key(Source, specs, {}, None) != logic_key(Source, specs, {}, "r1")


@pytest.mark.parametrize(
    "values,release,libs",
    [({}, None, ()), ({"n": 1, "scale": 0.5}, "r-2024", ()), ({}, "r", ("pydantic",))],
)
def test_fast_logic_key_encodes_exactly_the_payload_dict(values, release, libs, monkeypatch):
    from further_dagster.core.keys import reference_logic_key

    monkeypatch.setattr(Source, "track_libraries", libs)
    inst = resolve(Source, values)
    down = resolve(Double)
    assert logic_key(Source, inst.specs, {}, release) == reference_logic_key(
        Source, inst.specs, {}, release
    )
    assert logic_key(Double, down.specs, down.deps, None) == reference_logic_key(
        Double, down.specs, down.deps, None
    )
