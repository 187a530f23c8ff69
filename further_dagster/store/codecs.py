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

Writing (`encode_value`) also records each file's size and blake2b digest in its
`ManifestEntry`, hashing the file just written, before the commit rename. A value wrapped in
`Pinned(value, codec)` (a cell that declares `codec = "json"`, ...) is written by that codec or
refused, never pickled. A list or dict that contains itself is a `ContributionError` (the JSON
check would otherwise walk it forever), and an `OSError` while writing (disk full, read-only
root) is a `StoreError` naming the instance, the file and the fix.

Reading goes through `Codec.read(fh, path)` on a descriptor the store opened itself (with
`O_NOFOLLOW`, after checking size and digest); `Codec.output_types()` says what a codec can
produce, so a file whose codec cannot hold the declared type is refused before it is decoded;
`Codec.runs_code` marks the codecs whose files are only read when trusted (pickle).
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import pickle
import sys
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, ClassVar

from further_dagster.errors import CodecError, ContributionError, CorruptArtifactError, StoreError
from further_dagster.store import layout
from further_dagster.store.records import ManifestEntry, open_nofollow

HASH_CHUNK = 1 << 20
"""Bytes hashed per read when a file is digested."""


class CodecDeclined(Exception):
    """Raised by `Codec.encode` to pass a value it accepted on to the next codec."""


class Codec(ABC):
    """One file format. Subclass, set `name` and `suffix`, and `register_codec` an instance.

    `name` is written into the manifest and selects the codec when reading, so it must stay
    stable for as long as stored results use it. `suffix` starts with a dot.
    """

    name: ClassVar[str]
    suffix: ClassVar[str]
    runs_code: ClassVar[bool] = False
    """True if reading a file can run code it carries (pickle): such files are read only from
    instance directories the store trusts (see `ArtifactStore`)."""
    streams: ClassVar[bool] = False
    """True if `encode_stream` writes the file through a file object, so the store hashes the
    bytes while they are written; otherwise it hashes the file `encode` wrote."""

    @abstractmethod
    def can_encode(self, value: Any) -> bool:
        """Cheap check: True if this codec should write `value` (must not import heavy modules)."""

    @abstractmethod
    def encode(self, value: Any, path: Path) -> None:
        """Write `value` to `path`; raise `CodecDeclined` to let the next codec try instead."""

    @abstractmethod
    def decode(self, path: Path) -> Any:
        """Read the value back; any exception is reported as a corrupt artifact."""

    def encode_stream(self, value: Any, fh: IO[bytes]) -> None:
        """Write `value` to the writable binary file object `fh` (only if `streams`)."""
        raise NotImplementedError(f"codec {self.name!r} writes paths only (streams = False)")

    def read(self, fh: IO[bytes], path: Path) -> Any:
        """Read the value from `fh`, the open file `path` (already checked by the store).

        The default calls `decode(path)`; the built-in codecs read `fh` itself, so what is
        decoded is what was verified.
        """
        return self.decode(path)

    def output_types(self) -> tuple[type, ...] | None:
        """The exact types `read` can return (None: any type). Must not import heavy modules:
        a type whose module is not imported cannot be declared by anyone."""
        return None


# --- JSON ---------------------------------------------------------------------------------

_JSON_SCALARS = frozenset({type(None), bool, int, float, str})


_JSON_TYPES: tuple[type, ...] = (type(None), bool, int, float, str, list, dict)


class CyclicValueError(ValueError):
    """A list or dict contains itself (directly or through other lists and dicts)."""


_EXIT = object()


def is_json_value(value: Any) -> bool:
    """True if `value` survives a JSON round trip with the same types (checked by exact type).

    Iterative, so deep nesting cannot hit the recursion limit during the check. A list or dict
    shared by several containers is checked once; one that contains itself raises
    `CyclicValueError` (whatever else the value holds), since no codec should be asked to
    write a value that never ends.
    """
    kind = type(value)
    if kind in _JSON_SCALARS:
        return True
    if kind is not list and kind is not dict:
        return False
    plain = True
    on_path: set[int] = set()
    done: set[int] = set()
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if item is _EXIT:
            ident = stack.pop()
            on_path.discard(ident)
            done.add(ident)
            continue
        kind = type(item)
        if kind in _JSON_SCALARS:
            continue
        if kind is list or kind is dict:
            ident = id(item)
            if ident in done:
                continue
            if ident in on_path:
                raise CyclicValueError(f"a {kind.__name__} that contains itself")
            on_path.add(ident)
            stack.append(ident)
            stack.append(_EXIT)
            if kind is list:
                stack.extend(item)
            else:
                for k, v in item.items():
                    if type(k) is not str:
                        plain = False
                    stack.append(v)
        else:
            plain = False
    return plain


class JsonCodec(Codec):
    """Plain JSON for plain data: readable by humans and by any language."""

    name = "json"
    suffix = ".json"
    streams = True

    def can_encode(self, value: Any) -> bool:
        return is_json_value(value)

    def encode(self, value: Any, path: Path) -> None:
        with open(path, "wb") as fh:
            self.encode_stream(value, fh)

    def encode_stream(self, value: Any, fh: IO[bytes]) -> None:
        try:
            text = json.dumps(value, ensure_ascii=False)
        except (ValueError, RecursionError) as exc:  # too deep for the encoder
            raise CodecDeclined(str(exc)) from exc
        fh.write(text.encode("utf-8"))

    def decode(self, path: Path) -> Any:
        return json.loads(path.read_bytes())

    def read(self, fh: IO[bytes], path: Path) -> Any:
        return json.loads(fh.read())

    def output_types(self) -> tuple[type, ...]:
        return _JSON_TYPES


# --- numpy --------------------------------------------------------------------------------


class NpyCodec(Codec):
    """numpy's `.npy` format: exact dtype and shape, no pickle (object arrays go to pickle)."""

    name = "npy"
    suffix = ".npy"
    streams = True

    def can_encode(self, value: Any) -> bool:
        np = sys.modules.get("numpy")
        return np is not None and type(value) is np.ndarray and not value.dtype.hasobject

    def encode(self, value: Any, path: Path) -> None:
        with open(path, "wb") as fh:
            self.encode_stream(value, fh)

    def encode_stream(self, value: Any, fh: IO[bytes]) -> None:
        import numpy as np

        np.save(fh, value, allow_pickle=False)

    def decode(self, path: Path) -> Any:
        import numpy as np

        return np.load(path, allow_pickle=False)

    def read(self, fh: IO[bytes], path: Path) -> Any:
        import numpy as np

        value = np.load(fh, allow_pickle=False)
        if fh.read(1):  # np.load stops after the data it expects: more bytes are damage
            raise ValueError("trailing bytes after the array data")
        return value

    def output_types(self) -> tuple[type, ...]:
        np = sys.modules.get("numpy")
        return (np.ndarray,) if np is not None else ()


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

    def read(self, fh: IO[bytes], path: Path) -> Any:
        import pandas as pd

        return pd.read_parquet(fh, engine="pyarrow")

    def output_types(self) -> tuple[type, ...]:
        pd = sys.modules.get("pandas")
        return (pd.DataFrame,) if pd is not None else ()


# --- pickle -------------------------------------------------------------------------------


class PickleCodec(Codec):
    """The fallback for everything else (the class must be importable where it is loaded).

    Unpickling runs code the file names, so the store reads these files only when it trusts
    whoever could have written them (`runs_code`).
    """

    name = "pickle"
    suffix = ".pkl"
    runs_code = True
    streams = True

    def can_encode(self, value: Any) -> bool:
        return True

    def encode(self, value: Any, path: Path) -> None:
        with open(path, "wb") as fh:
            self.encode_stream(value, fh)

    def encode_stream(self, value: Any, fh: IO[bytes]) -> None:
        pickle.dump(value, fh, protocol=pickle.HIGHEST_PROTOCOL)

    def decode(self, path: Path) -> Any:
        with open(path, "rb") as fh:
            return pickle.load(fh)

    def read(self, fh: IO[bytes], path: Path) -> Any:
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


@dataclass(frozen=True, slots=True)
class Pinned:
    """A contribution value that may only be written by the codec named `codec`.

    The engine wraps the values of a cell that declares `codec = "json" | "npy" | "parquet"`,
    so a value that codec does not take is refused instead of falling back to pickle.
    """

    value: Any
    codec: str


def file_digest(fh: IO[bytes]) -> str:
    """The hex blake2b-256 digest of everything `fh` yields from its current position."""
    h = hashlib.blake2b(digest_size=32)
    while chunk := fh.read(HASH_CHUNK):
        h.update(chunk)
    return h.hexdigest()


def bytes_digest(data: bytes) -> str:
    """The hex blake2b-256 digest of `data` (what `file_digest` gives for a file of them)."""
    return hashlib.blake2b(data, digest_size=32).hexdigest()


def encode_value(name: str, value: Any, directory: Path) -> ManifestEntry:
    """Write contribution `name` into `directory` with the first codec that takes it (or the
    one a `Pinned` value names), and return its manifest entry with size and digest.

    Raises:
        ContributionError: the value is a list or dict that contains itself, or a `Pinned`
            value its codec does not take.
        CodecError: no codec could write it (e.g. an unpicklable object).
        StoreError: writing failed with an `OSError` (disk full, read-only root).
    """
    layout.validate_contribution_name(name)
    candidates: tuple[Codec, ...] = _codecs
    if type(value) is Pinned:
        candidates = (codec_by_name(value.codec),)
        value = value.value
    declined: list[str] = []
    for codec in candidates:
        try:
            takes = codec.can_encode(value)
        except CyclicValueError as exc:
            raise ContributionError(
                f"{layout.instance_label(directory)}: contribution {name!r} is "
                f"{_described(exc, value)}; the store refuses cyclic values (they have no JSON "
                f"form and no end). Return an acyclic value"
            ) from None
        if not takes:
            continue
        path = directory / layout.contribution_file_name(name, codec.suffix)
        try:
            return _write_entry(codec, value, path)
        except CodecDeclined as exc:
            declined.append(f"{codec.name}: {exc}")
            _unlink_quietly(path)
            continue
        except OSError as exc:
            _unlink_quietly(path)
            raise _write_error(name, path, exc) from exc
        except Exception as exc:
            _unlink_quietly(path)
            raise CodecError(
                f"{layout.instance_label(directory)}: cannot encode contribution {name!r} (a "
                f"{type(value).__qualname__}) with codec {codec.name!r}: "
                f"{type(exc).__name__}: {exc}. Return a picklable value (no lambdas, open files "
                f"or locally defined classes) or register a codec for it"
            ) from exc
    if candidates is not _codecs:
        (codec,) = candidates
        why = f" ({'; '.join(declined)})" if declined else ""
        raise ContributionError(
            f"{layout.instance_label(directory)}: contribution {name!r} is a "
            f"{type(value).__qualname__}, which codec {codec.name!r} (the cell's declared "
            f"codec) cannot write{why}; return a value that codec stores, or change the cell's "
            f"codec (None allows pickle)"
        )
    raise CodecError(
        f"no codec accepted contribution {name!r} (a {type(value).__qualname__}); "
        f"declined: {'; '.join(declined) or 'none'}"
    )


class _HashingWriter:
    """A binary file object that hashes and counts what passes through it to `raw`."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.size = 0
        self.hash = hashlib.blake2b(digest_size=32)

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self.hash.update(view)
        self.size += view.nbytes
        self.raw.write(view)
        return view.nbytes

    def flush(self) -> None:
        self.raw.flush()


def _write_entry(codec: Codec, value: Any, path: Path) -> ManifestEntry:
    """Write `value` to `path` with `codec`; its manifest entry with size and digest, hashed
    while writing (a streaming codec) or from the page cache right after."""
    if codec.streams:
        fd = open_nofollow(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        with os.fdopen(fd, "wb") as raw:
            writer = _HashingWriter(raw)
            codec.encode_stream(value, writer)  # type: ignore[arg-type]  # write() suffices
        size, digest = writer.size, writer.hash.hexdigest()
    else:
        codec.encode(value, path)
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            digest = file_digest(fh)
    return ManifestEntry(file=path.name, codec=codec.name, size=size, blake2b=digest)


def _described(exc: CyclicValueError, value: Any) -> str:
    return f"{exc}" if type(value) in (list, dict) else f"a {type(value).__name__} holding {exc}"


def _write_error(name: str, path: Path, exc: OSError) -> StoreError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        fix = "free space on that filesystem (or point FURTHER_ROOT elsewhere) and call again"
    elif exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        fix = "make the store root writable (or point FURTHER_ROOT at a writable directory)"
    else:
        fix = "check the filesystem of the store root and call again"
    return StoreError(
        f"{layout.instance_label(path.parent)}: writing contribution {name!r} to {path} failed: "
        f"{exc.strerror or exc} (errno {exc.errno}); {fix}. Nothing was committed"
    )


def decode_file(path: Path, codec_name: str) -> Any:
    """Read one contribution file (not following a symlink), unverified: the store's loads go
    through `ArtifactStore.load`, which checks the manifest, size and digest first.

    Raises:
        CorruptArtifactError: the file is missing or cannot be decoded.
        StoreError: the file is a symlink.
    """
    codec = codec_by_name(codec_name)
    try:
        fd = open_nofollow(path, os.O_RDONLY)
    except FileNotFoundError as exc:
        raise CorruptArtifactError(
            f"contribution file {path} listed in the manifest is missing; the result directory "
            f"was modified after commit: move it aside to recompute"
        ) from exc
    with os.fdopen(fd, "rb") as fh:
        return read_with(codec, fh, path)


def read_with(codec: Codec, fh: IO[bytes], path: Path) -> Any:
    """`codec.read(fh, path)`, failures naming `path`.

    Raises:
        CodecError: the file names a module or class this process cannot import (not damage:
            make it importable where you load).
        CorruptArtifactError: any other failure to decode.
    """
    try:
        return codec.read(fh, path)
    except (ImportError, AttributeError) as exc:
        raise CodecError(
            f"cannot decode {path} with codec {codec.name!r} in this process: "
            f"{type(exc).__name__}: {exc}; make the module or class it names importable where "
            f"you load (the file itself is not reported as damaged)"
        ) from exc
    except Exception as exc:
        raise CorruptArtifactError(
            f"cannot decode {path} with codec {codec.name!r}: {type(exc).__name__}: {exc}"
        ) from exc


def read_bytes_with(codec: Codec, data: bytes, path: Path) -> Any:
    """`read_with` over bytes already read (and verified) from `path`."""
    return read_with(codec, io.BytesIO(data), path)


def _unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
