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
import pathlib
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

KEY_HEX_CHARS = 32  # blake2b digest_size=16

_ENCODING_VERSION = b"further-key-v1\x00"


def _encode_str(tag: bytes, text: str) -> bytes:
    raw = text.encode("utf-8")
    return b"%s%d:%s" % (tag, len(raw), raw)


_STR_CACHE: dict[str, bytes] = {}


def _str(value: str) -> bytes:
    # Field names and short labels repeat in every key; caching them halves encoding time.
    found = _STR_CACHE.get(value)
    if found is None:
        found = _encode_str(b"s", value)
        if len(value) <= 64 and len(_STR_CACHE) < 65536:
            _STR_CACHE[value] = found
    return found


def _int(value: int) -> bytes:
    return b"i%d;" % value


def _float(value: float) -> bytes:
    if value != value:  # NaN: one encoding for every NaN
        return b"fnan;"
    return b"f" + value.hex().encode() + b";"


def _seq(value: list[Any] | tuple[Any, ...]) -> bytes:
    return b"l%d[" % len(value) + b"".join(map(encode, value)) + b"]"


def _mapping(value: Mapping[Any, Any]) -> bytes:
    items = sorted([(encode(k), encode(v)) for k, v in value.items()])
    return b"d%d{" % len(items) + b"".join([k + v for k, v in items]) + b"}"


_EXACT: dict[type, Any] = {
    type(None): lambda v: b"N",
    bool: lambda v: b"T" if v else b"F",
    int: _int,
    float: _float,
    str: _str,
    list: _seq,
    tuple: _seq,
    dict: _mapping,
}


def encode(value: Any) -> bytes:
    """Return the canonical byte encoding of `value`.

    Supports None, bool, int, float, str, bytes, lists/tuples, dicts, sets, enums, dates,
    paths and pydantic models; anything else is a TypeError, because a value without a stable
    encoding cannot be part of an identity.
    """
    fast = _EXACT.get(type(value))
    if fast is not None:
        return fast(value)  # type: ignore[no-any-return]
    kind = type(value)
    if isinstance(value, enum.Enum):
        cls = type(value)
        return _encode_str(b"e", f"{cls.__module__}.{cls.__qualname__}") + encode(value.value)
    if isinstance(value, bool):
        return b"T" if value else b"F"
    if isinstance(value, int):
        return _int(int(value))
    if isinstance(value, float):
        return _float(float(value))
    if isinstance(value, str):
        return _str(str(value))
    if isinstance(value, (bytes, bytearray)):
        return b"b%d:" % len(value) + bytes(value)
    if isinstance(value, (list, tuple)):
        return _seq(value)
    if isinstance(value, Mapping):
        return _mapping(value)
    if isinstance(value, (set, frozenset)):
        parts = sorted(map(encode, value))
        return b"S%d{" % len(parts) + b"".join(parts) + b"}"
    if isinstance(value, BaseModel):
        return b"m" + _mapping(dict(value))
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


class _NotPlain(Exception):
    pass


_SCALARS = {t: f for t, f in _EXACT.items() if t not in (list, tuple, dict)}


def _plain(value: Any) -> bytes:
    kind = type(value)
    fast = _SCALARS.get(kind)
    if fast is not None:
        return fast(value)  # type: ignore[no-any-return]
    if kind is dict:
        # in insertion order: equal dicts given in another order only miss a share
        return b"d{" + b"".join([_plain(k) + _plain(v) for k, v in value.items()]) + b"}"
    if kind is list or kind is tuple:
        # told apart (unlike in a key): a field typed Any keeps whichever it was given
        tag = b"l%d[" if kind is list else b"u%d["
        return tag % len(value) + b"".join(map(_plain, value)) + b"]"
    raise _NotPlain


def plain_token(value: Any) -> bytes | None:
    """An unambiguous encoding of plain data (None, bool, int, float, str and lists, tuples and
    dicts of them, exact types only), equal only for values no validator can tell apart; None
    for anything else. What `Validated` (core/validated.py) shares models by, never a key."""
    if type(value) is dict:  # the usual case, a flat dict of scalars, without recursion
        parts = []
        scalars = _SCALARS
        for k, v in value.items():
            fk, fv = scalars.get(type(k)), scalars.get(type(v))
            if fk is None or fv is None:
                break
            parts.append(fk(k) + fv(v))
        else:
            return b"d{" + b"".join(parts) + b"}"
    try:
        return _plain(value)
    except _NotPlain:
        return None


def digest(value: Any) -> str:
    """Hash `value`'s canonical encoding to a 32-character lowercase hex key."""
    return digest_encoded(encode(value))


def digest_encoded(encoded: bytes) -> str:
    """The key of an already encoded value."""
    return hashlib.blake2b(_ENCODING_VERSION + encoded, digest_size=16).hexdigest()
