"""Canonical, type-tagged encoding and the one hash function behind every logic key.

Every value is written with a tag for its type, so `1`, `1.0`, `True` and `"1"` encode
differently; dict entries are sorted by their encoded keys, so insertion order and the Python hash
seed never matter; floats go through `float.hex`, which is exact. Golden tests pin the output:
changing this module changes every stored key, so do it only on purpose.
"""

from __future__ import annotations

import datetime as _dt
import enum
import hashlib
import math
import pathlib
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

KEY_HEX_CHARS = 32  # blake2b digest_size=16

_ENCODING_VERSION = b"further-key-v1\x00"


def _encode_str(tag: bytes, text: str) -> bytes:
    raw = text.encode("utf-8")
    return tag + str(len(raw)).encode() + b":" + raw


def encode(value: Any) -> bytes:
    """Return the canonical byte encoding of `value`.

    Supports None, bool, int, float, str, bytes, lists/tuples, dicts, sets, enums, dates,
    paths and pydantic models; anything else is a TypeError, because a value without a stable
    encoding cannot be part of an identity.
    """
    # bool first: it is a subclass of int.
    if value is None:
        return b"N"
    if value is True:
        return b"T"
    if value is False:
        return b"F"
    kind = type(value)
    if kind is int:
        return b"i" + str(value).encode() + b";"
    if kind is float:
        if math.isnan(value):
            return b"fnan;"
        return b"f" + value.hex().encode() + b";"
    if kind is str:
        return _encode_str(b"s", value)
    if isinstance(value, enum.Enum):
        cls = type(value)
        return _encode_str(b"e", f"{cls.__module__}.{cls.__qualname__}") + encode(value.value)
    if isinstance(value, int):  # int subclasses (not bool, handled above)
        return b"i" + str(int(value)).encode() + b";"
    if isinstance(value, float):
        return encode(float(value))
    if isinstance(value, str):
        return encode(str(value))
    if isinstance(value, (bytes, bytearray)):
        return b"b" + str(len(value)).encode() + b":" + bytes(value)
    if isinstance(value, (list, tuple)):
        return b"l" + str(len(value)).encode() + b"[" + b"".join(map(encode, value)) + b"]"
    if isinstance(value, Mapping):
        items = sorted((encode(k), encode(v)) for k, v in value.items())
        return b"d" + str(len(items)).encode() + b"{" + b"".join(k + v for k, v in items) + b"}"
    if isinstance(value, (set, frozenset)):
        parts = sorted(map(encode, value))
        return b"S" + str(len(parts)).encode() + b"{" + b"".join(parts) + b"}"
    if isinstance(value, BaseModel):
        return b"m" + encode(dict(value))
    if isinstance(value, _dt.datetime):
        return _encode_str(b"t", value.isoformat())
    if isinstance(value, _dt.date):
        return _encode_str(b"D", value.isoformat())
    if isinstance(value, _dt.timedelta):
        return b"U" + encode(value.total_seconds())
    if isinstance(value, pathlib.PurePath):
        return _encode_str(b"p", value.as_posix())
    raise TypeError(
        f"cannot hash a value of type {kind.__module__}.{kind.__qualname__}: {value!r}. "
        "Spec values must be plain data (numbers, strings, lists, dicts, enums, dates, paths, "
        "pydantic models); convert it in the Specs model or move it to Opts."
    )


def digest(value: Any) -> str:
    """Hash `value`'s canonical encoding to a 32-character lowercase hex key."""
    return hashlib.blake2b(_ENCODING_VERSION + encode(value), digest_size=16).hexdigest()
