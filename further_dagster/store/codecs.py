"""How contribution values become files, and back.

Codecs are tried in order and the first that accepts a value writes it:

1. `json`    None/bool/int/float/str and lists/dicts of them with str keys, checked by exact
             `type`, so what comes back is what went in (a tuple, a numpy float or a str enum
             is *not* JSON here: it would come back as a list, a float or a str);
2. `npy`     numpy `ndarray` (exact type, no object dtype), read with `allow_pickle=False`;
3. `parquet` pandas `DataFrame` with unique str column names, through pyarrow, which keeps the
             index and dtypes; a frame pyarrow cannot write falls through to pickle;
4. `pickle`  anything else.

User codecs registered with `register_codec` are tried before `pickle`. numpy and pandas are
never imported to *check* a value (a value can only be an ndarray if numpy is already imported)
and only imported to *read* when such a file is loaded, so importing the store stays cheap.
"""

from __future__ import annotations

import json
import os
import pickle
import sys
import threading
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

from further_dagster.errors import CodecError, CorruptArtifactError
from further_dagster.store import layout
from further_dagster.store.records import ManifestEntry


class CodecDeclined(Exception):
    """Raised by `Codec.encode` to pass a value it accepted on to the next codec."""


class Codec(ABC):
    """One file format. Subclass, set `name` and `suffix`, and `register_codec` an instance.

    `name` is written into the manifest and selects the codec when reading, so it must stay
    stable for as long as stored results use it. `suffix` starts with a dot.
    """

    name: ClassVar[str]
    suffix: ClassVar[str]

    @abstractmethod
    def can_encode(self, value: Any) -> bool:
        """Cheap check: True if this codec should write `value` (must not import heavy modules)."""

    @abstractmethod
    def encode(self, value: Any, path: Path) -> None:
        """Write `value` to `path`; raise `CodecDeclined` to let the next codec try instead."""

    @abstractmethod
    def decode(self, path: Path) -> Any:
        """Read the value back; any exception is reported as a corrupt artifact."""


# --- JSON ---------------------------------------------------------------------------------

_JSON_SCALARS = frozenset({type(None), bool, int, float, str})


def is_json_value(value: Any) -> bool:
    """True if `value` survives a JSON round trip with the same types (checked by exact type).

    Iterative, so deep nesting cannot hit the recursion limit during the check.
    """
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind in _JSON_SCALARS:
            continue
        if kind is list:
            stack.extend(item)
        elif kind is dict:
            for k, v in item.items():
                if type(k) is not str:
                    return False
                stack.append(v)
        else:
            return False
    return True


class JsonCodec(Codec):
    """Plain JSON for plain data: readable by humans and by any language."""

    name = "json"
    suffix = ".json"

    def can_encode(self, value: Any) -> bool:
        return is_json_value(value)

    def encode(self, value: Any, path: Path) -> None:
        try:
            text = json.dumps(value, ensure_ascii=False)
        except (ValueError, RecursionError) as exc:  # circular reference, too deep
            raise CodecDeclined(str(exc)) from exc
        path.write_text(text, encoding="utf-8")

    def decode(self, path: Path) -> Any:
        return json.loads(path.read_bytes())


# --- numpy --------------------------------------------------------------------------------


class NpyCodec(Codec):
    """numpy's `.npy` format: exact dtype and shape, no pickle (object arrays go to pickle)."""

    name = "npy"
    suffix = ".npy"

    def can_encode(self, value: Any) -> bool:
        np = sys.modules.get("numpy")
        return np is not None and type(value) is np.ndarray and not value.dtype.hasobject

    def encode(self, value: Any, path: Path) -> None:
        import numpy as np

        with open(path, "wb") as fh:
            np.save(fh, value, allow_pickle=False)

    def decode(self, path: Path) -> Any:
        import numpy as np

        return np.load(path, allow_pickle=False)


# --- pandas -------------------------------------------------------------------------------


class ParquetCodec(Codec):
    """pandas DataFrames as parquet via pyarrow; pandas metadata restores index and dtypes."""

    name = "parquet"
    suffix = ".parquet"

    def can_encode(self, value: Any) -> bool:
        pd = sys.modules.get("pandas")
        if pd is None or type(value) is not pd.DataFrame:
            return False
        columns = value.columns
        return columns.is_unique and all(type(c) is str for c in columns)

    def encode(self, value: Any, path: Path) -> None:
        import pyarrow as pa

        try:
            value.to_parquet(path, engine="pyarrow")
        except (pa.ArrowException, ValueError, TypeError, NotImplementedError) as exc:
            # Mixed-type object columns, non-str index names and the like: pickle keeps them.
            raise CodecDeclined(f"{type(exc).__name__}: {exc}") from exc

    def decode(self, path: Path) -> Any:
        import pandas as pd

        return pd.read_parquet(path, engine="pyarrow")


# --- pickle -------------------------------------------------------------------------------


class PickleCodec(Codec):
    """The fallback for everything else (the class must be importable where it is loaded)."""

    name = "pickle"
    suffix = ".pkl"

    def can_encode(self, value: Any) -> bool:
        return True

    def encode(self, value: Any, path: Path) -> None:
        with open(path, "wb") as fh:
            pickle.dump(value, fh, protocol=pickle.HIGHEST_PROTOCOL)

    def decode(self, path: Path) -> Any:
        with open(path, "rb") as fh:
            return pickle.load(fh)


# --- registry -----------------------------------------------------------------------------

_FALLBACK = PickleCodec()
_registry_lock = threading.Lock()
_codecs: tuple[Codec, ...] = (JsonCodec(), NpyCodec(), ParquetCodec(), _FALLBACK)


def registered_codecs() -> tuple[Codec, ...]:
    """The codecs in the order they are tried."""
    return _codecs


def register_codec(codec: Codec, *, replace: bool = False) -> None:
    """Add `codec`, tried after those already registered and before the pickle fallback.

    A codec whose `name` is taken raises `CodecError` unless `replace=True`, which swaps it in
    place (keeping its position). Register in every process that loads such files.
    """
    global _codecs
    if not isinstance(codec, Codec):
        raise CodecError(f"{codec!r} is not a further_dagster.store.codecs.Codec instance")
    if not isinstance(getattr(codec, "name", None), str) or not codec.name:
        raise CodecError(f"codec {codec!r} needs a non-empty str `name`")
    layout.contribution_file_name("probe", codec.suffix)  # validates the suffix
    with _registry_lock:
        current = list(_codecs)
        for i, existing in enumerate(current):
            if existing.name == codec.name:
                if not replace:
                    raise CodecError(
                        f"a codec named {codec.name!r} is already registered "
                        f"({type(existing).__name__}); pass replace=True to swap it"
                    )
                current[i] = codec
                break
        else:
            current.insert(len(current) - 1 if current[-1] is _FALLBACK else len(current), codec)
        _codecs = tuple(current)


def codec_by_name(name: str) -> Codec:
    """The registered codec called `name`, or `CodecError` saying how to register it."""
    for codec in _codecs:
        if codec.name == name:
            return codec
    raise CodecError(
        f"no codec named {name!r} is registered in this process (known: "
        f"{', '.join(c.name for c in _codecs)}); import the module that calls register_codec "
        f"for it before loading"
    )


def encode_value(name: str, value: Any, directory: Path) -> ManifestEntry:
    """Write contribution `name` into `directory` with the first codec that takes it."""
    layout.validate_contribution_name(name)
    declined: list[str] = []
    for codec in _codecs:
        if not codec.can_encode(value):
            continue
        path = directory / layout.contribution_file_name(name, codec.suffix)
        try:
            codec.encode(value, path)
        except CodecDeclined as exc:
            declined.append(f"{codec.name}: {exc}")
            _unlink_quietly(path)
            continue
        except Exception as exc:
            _unlink_quietly(path)
            raise CodecError(
                f"cannot encode contribution {name!r} (a {type(value).__qualname__}) with codec "
                f"{codec.name!r}: {type(exc).__name__}: {exc}. Return a picklable value (no "
                f"lambdas, open files or locally defined classes) or register a codec for it"
            ) from exc
        return ManifestEntry(file=path.name, codec=codec.name)
    raise CodecError(
        f"no codec accepted contribution {name!r} (a {type(value).__qualname__}); "
        f"declined: {'; '.join(declined) or 'none'}"
    )


def decode_file(path: Path, codec_name: str) -> Any:
    """Read one contribution file; a missing or undecodable file is `CorruptArtifactError`."""
    codec = codec_by_name(codec_name)
    try:
        return codec.decode(path)
    except FileNotFoundError as exc:
        raise CorruptArtifactError(
            f"contribution file {path} listed in the manifest is missing; the result directory "
            f"was modified after commit: delete {path.parent} to recompute"
        ) from exc
    except Exception as exc:
        raise CorruptArtifactError(
            f"cannot decode {path} with codec {codec_name!r}: {type(exc).__name__}: {exc}. "
            f"If the file is damaged, delete {path.parent} to recompute; if a class cannot be "
            f"imported, make it importable where you load"
        ) from exc


def _unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
