"""The canonical encoding: type-tagged, order-free, exact; pinned by golden values."""

import datetime as dt
import enum
import os
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from further_dagster.core.hashing import digest, encode

pytestmark = pytest.mark.unit


def test_types_are_tagged():
    values = [1, 1.0, True, "1", b"1", [1], (1,), {"1": 1}, None, 0, False, ""]
    encodings = [encode(v) for v in values]
    # list and tuple are both sequences: same encoding on purpose (pydantic gives either)
    assert encodings[5] == encodings[6]
    del encodings[6]
    assert len(set(encodings)) == len(encodings)


def test_dict_order_does_not_matter():
    assert digest({"a": 1, "b": [2, 3]}) == digest({"b": [2, 3], "a": 1})


def test_floats_are_exact():
    assert digest(0.1 + 0.2) != digest(0.3)
    assert digest(float("nan")) == digest(float("nan"))


def test_unsupported_type_says_how_to_fix():
    with pytest.raises(TypeError, match="move it to Opts"):
        encode(object())


class Color(enum.Enum):
    RED = "red"


GOLDEN = [
    (None, "a25268e9db126cadbc58dec94fe25309"),
    (1, "3dd1d846306febbea01b82cb49f14e21"),
    (1.0, "37efcc442779c13158406c750653abee"),
    (True, "29ca22a80f5e5f75276aad80eba5907b"),
    ("1", "0f035a6bee9e9181ae4b8989a00e3548"),
    ({"b": [1, 2.5, "x"], "a": {"nested": None}}, "7578f913d498a9167a250f7fecb8b940"),
    (Color.RED, "53b04a7d2caf0efac71c677d919257f8"),
    (dt.date(2024, 1, 15), "548a083e7331dd01c116523b48f36674"),
]


def _golden_values():
    return [digest(v) for v, _ in GOLDEN]


def test_golden_digests():
    got = _golden_values()
    assert got == [pinned for _, pinned in GOLDEN], (
        "the canonical encoding changed: every stored key would change"
    )


def _child_digests(seed: str) -> list[str]:
    code = (
        "import datetime as dt, enum\n"
        "from further_dagster.core.hashing import digest\n"
        "class Color(enum.Enum):\n    RED = 'red'\n"
        "Color.__module__ = 'tests.core.test_hashing'\n"
        "vals=[None,1,1.0,True,'1',{'b':[1,2.5,'x'],'a':{'nested':None}},Color.RED,"
        "dt.date(2024,1,15)]\n"
        "print(' '.join(digest(v) for v in vals))\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": seed}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    return out.stdout.split()


def test_equal_across_processes_and_hash_seeds():
    assert _child_digests("1") == _child_digests("12345") == _golden_values()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_digest_is_deterministic(value):
    assert digest(value) == digest(value)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(max_size=5), st.integers(), min_size=2, max_size=6))
def test_digest_ignores_insertion_order(d):
    assert digest(d) == digest(dict(reversed(list(d.items()))))


@settings(max_examples=200, deadline=None)
@given(json_values, json_values)
def test_different_values_give_different_digests(a, b):
    if encode(a) != encode(b):
        assert digest(a) != digest(b)
