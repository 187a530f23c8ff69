"""Codecs: each value comes back with the same types, and bad files say which file is bad."""

from __future__ import annotations

import ast
import enum
import math
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from further_dagster.errors import CodecError, CorruptArtifactError
from further_dagster.store import codecs
from further_dagster.store.codecs import Codec, decode_file, encode_value, register_codec

pytestmark = pytest.mark.unit


def roundtrip(value: Any, tmp_path: Path, name: str = "v") -> tuple[Any, str]:
    entry = encode_value(name, value, tmp_path)
    assert (tmp_path / entry.file).is_file()
    return decode_file(tmp_path / entry.file, entry.codec), entry.codec


def assert_identical(a: Any, b: Any) -> None:
    """Equal values *and* equal types all the way down (1 != 1.0 != True here)."""
    assert type(a) is type(b), (a, b)
    if isinstance(a, dict):
        assert list(a) == list(b)
        for k in a:
            assert_identical(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_identical(x, y)
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b)
    else:
        assert a == b


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        False,
        0,
        1,
        -(2**80),
        1.0,
        0.1,
        -0.0,
        1e300,
        float("inf"),
        float("nan"),
        "",
        "text \u00e9\u4e2d",
        [],
        {},
        [1, 1.0, True, "1", None],
        {"a": {"b": [1.5, None, {"c": [True, 2]}]}, "z": 1, "m": 2},
    ],
)
def test_json_values_round_trip_with_exact_types(value: Any, tmp_path: Path) -> None:
    back, codec = roundtrip(value, tmp_path)
    assert codec == "json"
    assert_identical(back, value)


def test_deep_nesting_is_checked_without_recursion(tmp_path: Path) -> None:
    value: Any = 1
    for _ in range(5000):
        value = [value]
    assert codecs.is_json_value(value)  # iterative check: no RecursionError


class Color(enum.StrEnum):
    RED = "red"


@pytest.mark.parametrize(
    "value",
    [
        (1, 2),
        {1, 2},
        frozenset({"a"}),
        {1: "int key"},
        [1, (2, 3)],
        {"a": {"b": {1, 2}}},
        np.float64(1.5),
        Color.RED,
        b"bytes",
        Fraction(1, 3),
        np.array([1, "a", None], dtype=object),
        pd.Series([1, 2], name="s"),
    ],
    ids=lambda v: type(v).__name__,
)
def test_non_json_values_fall_back_to_pickle_with_their_type(value: Any, tmp_path: Path) -> None:
    back, codec = roundtrip(value, tmp_path)
    assert codec == "pickle"
    assert type(back) is type(value)
    if isinstance(value, np.ndarray):
        assert back.tolist() == value.tolist()
    elif isinstance(value, pd.Series):
        pd.testing.assert_series_equal(back, value)
    else:
        assert back == value


class Custom:
    def __init__(self, x: int) -> None:
        self.x = x

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Custom) and other.x == self.x

    __hash__ = None  # type: ignore[assignment]


def test_custom_class_pickles(tmp_path: Path) -> None:
    back, codec = roundtrip({"k": Custom(3)}, tmp_path)
    assert codec == "pickle"
    assert back == {"k": Custom(3)}


@pytest.mark.parametrize(
    "array",
    [
        np.arange(12, dtype=np.float32).reshape(3, 4),
        np.arange(24, dtype=np.int64).reshape(2, 3, 4),
        np.asfortranarray(np.arange(6, dtype=np.int16).reshape(2, 3)),
        np.array([True, False]),
        np.array([1 + 2j], dtype=np.complex128),
        np.zeros((0, 3), dtype=np.uint8),
        np.array(7.5),
        np.array(["ab", "c"]),
        np.array([(1, 2.0)], dtype=[("a", "i4"), ("b", "f8")]),
        np.array(["2024-01-01"], dtype="datetime64[D]"),
    ],
    ids=lambda a: f"{a.dtype}-{a.shape}",
)
def test_numpy_arrays_keep_dtype_and_shape(array: np.ndarray, tmp_path: Path) -> None:
    back, codec = roundtrip(array, tmp_path)
    assert codec == "npy"
    assert type(back) is np.ndarray
    assert back.dtype == array.dtype
    assert back.shape == array.shape
    assert np.array_equal(back, array)


def test_npy_files_are_read_without_pickle(tmp_path: Path) -> None:
    np.save(tmp_path / "evil.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(CorruptArtifactError, match="evil.npy"):
        decode_file(tmp_path / "evil.npy", "npy")


def _frames() -> list[pd.DataFrame]:
    idx = pd.Index(["x", "y", "z"], name="row")
    return [
        pd.DataFrame({"a": [1, 2, 3], "b": [1.5, float("nan"), 3.0]}, index=idx),
        pd.DataFrame(
            {"v": [1, 2]},
            index=pd.MultiIndex.from_tuples([("a", 1), ("b", 2)], names=["k1", "k2"]),
        ),
        pd.DataFrame(
            {
                "when": pd.date_range("2024-01-01", periods=3, tz="UTC"),
                "cat": pd.Categorical(["u", "v", "u"]),
                "nullable": pd.array([1, None, 3], dtype="Int64"),
                "s": pd.array(["p", None, "q"], dtype="string"),
                "flag": [True, False, True],
            }
        ),
        pd.DataFrame({"a": [1.0]}, index=pd.RangeIndex(5, 6, name="r")),
        pd.DataFrame({"a": pd.Series([], dtype="float32")}),
    ]


@pytest.mark.parametrize("frame", _frames(), ids=lambda f: ",".join(map(str, f.dtypes)))
def test_dataframes_go_to_parquet_with_index_and_dtypes(
    frame: pd.DataFrame, tmp_path: Path
) -> None:
    back, codec = roundtrip(frame, tmp_path)
    assert codec == "parquet"
    pd.testing.assert_frame_equal(back, frame, check_exact=True)
    assert list(back.dtypes) == list(frame.dtypes)
    assert back.index.names == frame.index.names


@pytest.mark.parametrize(
    "frame",
    [
        pd.DataFrame({0: [1], 1: [2]}),  # non-str column names: parquet would rename them
        pd.DataFrame({"mixed": [1, "a"]}),  # pyarrow refuses: declined, pickled instead
        pd.DataFrame([[1, 2]], columns=["a", "a"]),
    ],
    ids=["int-columns", "mixed-object", "duplicate-columns"],
)
def test_frames_parquet_cannot_hold_are_pickled(frame: pd.DataFrame, tmp_path: Path) -> None:
    back, codec = roundtrip(frame, tmp_path)
    assert codec == "pickle"
    pd.testing.assert_frame_equal(back, frame)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.pkl"]  # no stray .parquet


@pytest.mark.parametrize(
    ("codec", "suffix", "garbage"),
    [
        ("json", ".json", b"{not json"),
        ("npy", ".npy", b"\x93NUMPY garbage"),
        ("parquet", ".parquet", b"PAR1 not really"),
        ("pickle", ".pkl", b"\x80\x05 truncated"),
    ],
)
def test_corrupt_files_raise_naming_the_file(
    codec: str, suffix: str, garbage: bytes, tmp_path: Path
) -> None:
    path = tmp_path / f"broken{suffix}"
    path.write_bytes(garbage)
    with pytest.raises(CorruptArtifactError, match=f"broken\\{suffix}"):
        decode_file(path, codec)


def test_missing_file_is_corrupt(tmp_path: Path) -> None:
    with pytest.raises(CorruptArtifactError, match="missing"):
        decode_file(tmp_path / "gone.json", "json")


def test_unpicklable_value_raises_codec_error_naming_the_contribution(tmp_path: Path) -> None:
    with pytest.raises(CodecError, match="'fn'"):
        encode_value("fn", lambda: 1, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_unknown_codec_name_says_how_to_fix(tmp_path: Path) -> None:
    (tmp_path / "x.bin").write_bytes(b"")
    with pytest.raises(CodecError, match="register_codec"):
        decode_file(tmp_path / "x.bin", "nope")


class Point:
    def __init__(self, x: int, y: int) -> None:
        self.x, self.y = x, y


class PointCodec(Codec):
    name = "point"
    suffix = ".point"

    def can_encode(self, value: Any) -> bool:
        return type(value) is Point

    def encode(self, value: Any, path: Path) -> None:
        path.write_text(f"{value.x},{value.y}")

    def decode(self, path: Path) -> Any:
        x, y = path.read_text().split(",")
        return Point(int(x), int(y))


def test_registered_codec_is_tried_before_pickle(tmp_path: Path) -> None:
    register_codec(PointCodec())
    names = [c.name for c in codecs.registered_codecs()]
    assert names == ["json", "npy", "parquet", "point", "pickle"]
    back, codec = roundtrip(Point(1, 2), tmp_path)
    assert codec == "point"
    assert (back.x, back.y) == (1, 2)
    assert (tmp_path / "v.point").read_text() == "1,2"


def test_duplicate_codec_name_needs_replace() -> None:
    register_codec(PointCodec())
    with pytest.raises(CodecError, match="replace=True"):
        register_codec(PointCodec())
    replacement = PointCodec()
    register_codec(replacement, replace=True)
    assert codecs.codec_by_name("point") is replacement
    with pytest.raises(CodecError):
        register_codec(object())  # type: ignore[arg-type]


def test_store_modules_import_no_heavy_or_forbidden_package_at_module_level() -> None:
    """numpy/pandas/pyarrow load lazily; dagster and submitit are never imported by the store."""
    store_dir = Path(codecs.__file__).parent
    for module in sorted(store_dir.glob("*.py")):
        tree = ast.parse(module.read_text())
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                assert top not in {"dagster", "submitit"}, f"{module.name} imports {name}"
                if node in tree.body:
                    assert top not in {"numpy", "pandas", "pyarrow"}, f"{module.name}: {name}"
