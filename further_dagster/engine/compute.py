"""Compute or load one instance through the store: the single code path every executor uses.

A Session thread, a Dagster asset step, a Dask worker and a Slurm job all end up here, so the
memoization, locking and provenance rules are the same everywhere.

Loading checks the result against the cell's declaration (`Expected`: the declared
contributions, the cell's `codec`, and the reading project for the pickle trust rule) before
the store decodes anything, and the decoded values against the declared types (the rule
make()'s values were checked by). A damaged result is moved aside (`Store.quarantine`) and
raised as `CorruptArtifactError`, so the next call recomputes it; a dependent whose input is
damaged fails with `CorruptInputError` and commits nothing.

Trust: a pickled contribution of project q, read as an input of a cell of project p != q, is
"external" and is unpickled only if the store trusts q (`ArtifactStore(trust=...)`, filled by
`Session(trust=...)` / `build_definitions(trust=...)`). A result the caller asked for itself
(the return value of a Session call, an IO manager's input) has no reading cell: `reader=None`.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import Any

from further_dagster.core.cell import Cell, Contributions, check_type
from further_dagster.core.instances import Instance
from further_dagster.core.iterative import PREVIOUS_EDGE
from further_dagster.engine.dynamic import RuntimeCalls
from further_dagster.engine.increments import increment_of
from further_dagster.engine.queries import Db, queries_of
from further_dagster.errors import (
    CorruptArtifactError,
    CorruptInputError,
    InputLoadError,
    StoreError,
    UntrustedInputError,
    UntrustedPickleError,
)
from further_dagster.store import Computed, Expected, Outcome, Store, layout
from further_dagster.store.codecs import Pinned

log = logging.getLogger("further")


class ContributionCache:
    """Contributions loaded during one call, so a shared dependency is read from disk once."""

    def __init__(self) -> None:
        self._values: MutableMapping[tuple[str, str | None], Contributions] = {}
        self._lock = threading.Lock()

    def get(self, store: Store, inst: Instance, *, reader: str | None = None) -> Contributions:
        """`load(store, inst, reader=reader)`, once per (key, reading project): the trust rule
        depends on who reads."""
        slot = (inst.key, reader)
        found = self._values.get(slot)
        if found is None:
            found = load(store, inst, reader=reader)
            with self._lock:
                self._values[slot] = found
        return found


_IMMUTABLE = (int, float, complex, str, bytes, bool, type(None))


def _immutable(value: Any) -> bool:
    """Can one loaded value be handed out twice (no caller can change it in place)?"""
    if type(value) in _IMMUTABLE:
        return True
    if type(value) in (tuple, frozenset):
        return all(_immutable(v) for v in value)
    return False


_Stamp = tuple[int, ...]


class ResultCache:
    """The results a Session returned, handed out again while their result is unchanged.

    A repeat cached call would otherwise read, hash and decode every result again (most of
    its cost). An entry is reused only while every file of the result (its manifest and each
    contribution's file) keeps its inode, size, mtime and ctime: a recompute, a quarantine or
    any write to a file changes them, and ctime cannot be set back by a user. Also the cell
    must declare the same contributions and codec, and every value be immutable: a list,
    dict or array is loaded anew each time, so what one caller changes in place never reaches
    another. What it hands out was checked (digests, declared types) when it was loaded;
    damage no write explains (a failing disk) is found by the next load that reads the file.
    """

    def __init__(self, limit: int = 65536) -> None:
        self.limit = limit
        self._found: dict[str, tuple[tuple[str, ...], _Stamp, Any, Any, Contributions]] = {}
        # key -> the call in which `stored` found its manifest unchanged: its load then looks
        # no more (the plan's look and the load's are microseconds apart, as two stats were)
        self._looked: dict[str, int] = {}
        self._call = 0

    def next_call(self) -> None:
        """A new call starts: what `stored` saw before counts no more."""
        self._call += 1

    def stored(self, store: Store, inst: Instance) -> bool:
        """`is_stored(store, inst)`, by the manifest's stamp for a cached result: one stat for
        the plan and the load together."""
        found = self._found.get(inst.key)
        if found is not None and _stamp_of(found[0]) == found[1]:
            self._looked[inst.key] = self._call
            return True
        cell = inst.cell
        return store.is_stored(cell.project.name, cell.name, inst.key)

    def load(self, store: Store, inst: Instance) -> Contributions:
        """`load(store, inst)` (reader None), from the cache when nothing changed."""
        cell = inst.cell
        found = self._found.get(inst.key)
        if found is not None:
            path, stamp_was, contributions, codec, result = found
            if (
                (self._looked.get(inst.key) == self._call or _stamp_of(path) == stamp_was)
                and contributions == cell.contributions
                and codec == cell.codec
            ):
                return result
            del self._found[inst.key]
            self._looked.pop(inst.key, None)
        project, name = cell.project.name, cell.name
        # stamped before loading: a change while it loads shows at the next call
        path = _files_of(layout.result_dir(store.instance_dir(project, name, inst.key)))
        stamp = _stamp_of(path) if path else None
        result = load(store, inst)
        if stamp is not None and all(_immutable(v) for v in result.to_dict().values()):
            if len(self._found) >= self.limit:
                oldest = next(iter(self._found))
                del self._found[oldest]
                self._looked.pop(oldest, None)
            self._found[inst.key] = (path, stamp, dict(cell.contributions), cell.codec, result)
        return result


def _files_of(result: Path) -> tuple[str, ...]:
    """The manifest first, then the contributions' files of a result directory (none if it is
    gone); provenance is not a value a caller gets."""
    manifest, skip = layout.MANIFEST_NAME, (layout.MANIFEST_NAME, layout.PROVENANCE_NAME)
    try:
        names = sorted(n for n in os.listdir(result) if n not in skip)
    except OSError:
        return ()
    return (str(result / manifest), *(str(result / n) for n in names))


def _stamp_of(paths: tuple[str, ...]) -> _Stamp | None:
    stamp: list[int] = []
    try:
        for path in paths:
            st = os.stat(path)
            stamp += (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    except OSError:
        return None
    return tuple(stamp)


def expected_of(inst: Instance, reader: str | None = None) -> Expected:
    """What `inst`'s cell declares about its stored result, read by a cell of `reader`."""
    cell = inst.cell
    return Expected(contributions=cell.contributions, codec=cell.codec, reader=reader)


def load(store: Store, inst: Instance, *, reader: str | None = None) -> Contributions:
    """The stored contributions of `inst`, checked against its cell's declaration.

    `reader` is the project of the cell reading them as an input (None: the caller reads the
    result it asked for).

    Raises:
        CorruptArtifactError: the result is damaged or does not match the declaration; it was
            moved aside (`Store.quarantine`) and the next call recomputes it.
        UntrustedPickleError: a pickle the store does not trust.
        StoreError: not stored, or a symlink in the store.
    """
    cell = inst.cell
    project, name = cell.project.name, cell.name
    try:
        values = store.load(project, name, inst.key, expect=expected_of(inst, reader))
        problem = declared_problem(inst, values)
        if problem is not None:
            raise CorruptArtifactError(f"{project}.{name}@{inst.key} is damaged: {problem}")
    except CorruptArtifactError as exc:
        raise _quarantined(store, inst, exc) from exc
    return Contributions(
        values,
        key=inst.key,
        specs=inst.specs,
        cell=cell.full_name,
        increment=inst.increment or None,
    )


def declared_problem(inst: Instance, values: Mapping[str, Any]) -> str | None:
    """How loaded values differ from the cell's declared contributions (names, and types by
    the rule make()'s values are checked with), or None."""
    declared = inst.cell.contributions
    if set(values) != set(declared):
        return f"it holds {sorted(values)}, the cell declares {sorted(declared)}"
    for field, kind in declared.items():
        if not check_type(values[field], kind):
            return (
                f"contribution {field!r} loaded as {type(values[field]).__name__}, declared as "
                f"{getattr(kind, '__name__', kind)}"
            )
    return None


def _quarantined(store: Store, inst: Instance, exc: CorruptArtifactError) -> CorruptArtifactError:
    cell = inst.cell
    try:
        moved = store.quarantine(cell.project.name, cell.name, inst.key, str(exc))
    except (StoreError, OSError) as move_exc:
        log.error("%s: could not move the damaged result aside: %s", inst.label, move_exc)
        return exc
    where = f"moved aside to {moved}" if moved is not None else "already moved aside"
    return CorruptArtifactError(f"{exc} [{where}; the next call recomputes it]")


def provenance_of(inst: Instance) -> dict[str, Any]:
    record = _provenance(inst)
    if not inst.increment and not inst.transformed and not inst.labels:
        return record
    extra: dict[str, Any] = dict(record.get("extra") or {})
    if inst.increment:  # the base key lets a result find its earlier increments
        extra.update(increment=inst.increment, increment_base=inst.base)
    if inst.transformed:
        extra["transformers"] = list(inst.transformed)
    if inst.labels:
        extra["labels"] = list(inst.labels)
    record["extra"] = extra
    return record


def _provenance(inst: Instance) -> dict[str, Any]:
    cell = inst.cell
    return {
        "project": cell.project.name,
        "cell": cell.name,
        "key": inst.key,
        "logic_version": str(cell.logic_version),
        "api_version": str(cell.api_version),
        "specs": inst.specs.model_dump(mode="json"),
        "opts": inst.opts.model_dump(mode="json"),
        "deps": inst.dep_keys(),
        "releases": inst.releases(),
        **({"extra": extra} if (extra := _extra(cell, queries_of(cell))) else {}),
    }


def _extra(cell: type[Cell], queries: dict[str, dict[str, str]]) -> dict[str, Any]:
    """Provenance facts known before make(): the project's version (when not the default),
    QUERY texts, contributions to record."""
    extra: dict[str, Any] = {}
    recorded = cell.recorded
    if cell.project.key_version is not None:
        extra["project_version"] = cell.project.key_version
    if queries:
        extra["queries"] = queries
    if recorded:
        extra["recorded"] = list(recorded)
    return extra


def ensure(
    store: Store,
    inst: Instance,
    cache: ContributionCache | None = None,
    *,
    cancelled: threading.Event | None = None,
) -> Outcome:
    """Make sure `inst` is stored: a hit costs one stat; a miss loads the inputs, runs make()
    under the store's lease, checks the contributions and commits them atomically.

    `cancelled` is set by a caller that gave up on this instance (Ctrl-C of a Session): an
    attempt that has not reached make() yet then stops as `interrupted` instead of running it.
    """
    cache = cache or ContributionCache()
    cell = inst.cell

    def compute(artifact_dir: Path, cell_log: logging.Logger) -> Mapping[str, Any] | Computed:
        _stop_if_cancelled(cancelled, inst)
        inputs = load_inputs(store, inst, cache)
        runtime = RuntimeCalls(store, inst) if inst.dynamic else None
        if runtime is not None:
            inputs.update(runtime.draw_inputs())
        _stop_if_cancelled(cancelled, inst)
        maker = cell(
            specs=inst.specs,
            opts=inst.opts,
            inputs=inputs,
            key=inst.key,
            log=cell_log,
            artifact_dir=artifact_dir,
            release=inst.release,
            dynamic=runtime,
            increment=inst.increment or None,
        )
        maker.db = Db(store)
        values = cell.check_contributions(maker.make())
        if cell.codec is not None:  # written by that codec or refused, never pickled
            values = {name: Pinned(value, cell.codec) for name, value in values.items()}
        if runtime is None:
            return values
        for edge in runtime.uncalled():
            cell_log.warning(
                "%s: make() never called its %s edge %r (self.call(%r, ...)); drop the edge "
                "or call it",
                inst.label,
                inst.dynamic[edge].kind,
                edge,
                edge,
            )
        return Computed(values, {"runtime_calls": runtime.records})

    return store.ensure(cell.project.name, cell.name, inst.key, compute, provenance_of(inst))


def load_inputs(store: Store, inst: Instance, cache: ContributionCache) -> dict[str, Any]:
    """make()'s inputs, edge -> Contributions (a list for a swept edge).

    A dependency that cannot be loaded (damaged, missing, untrusted) is not the computing
    cell's fault: it is raised as an `InputLoadError` naming the cell, the edge and the
    dependency, which the store records as an `environment` attempt (not counted toward
    max_attempts).
    """

    reader = inst.cell.project.name

    def one(edge: str, dep: Instance) -> Contributions:
        try:
            return cache.get(store, dep, reader=reader)
        except (StoreError, UntrustedPickleError) as exc:
            kind: type[InputLoadError] = InputLoadError
            if isinstance(exc, CorruptArtifactError):
                kind = CorruptInputError
            elif isinstance(exc, UntrustedPickleError):
                kind = UntrustedInputError
            raise kind(
                f"{inst.label}: its input {edge!r} ({dep.label}) could not be loaded, so "
                f"make() did not run and the attempt does not count as a failure: "
                f"{type(exc).__name__}: {exc}. The next call recomputes an input that is no "
                f"longer stored; `further-dagster verify` lists damaged results."
            ) from exc

    inputs: dict[str, Any] = {}
    for edge, dep in inst.deps.items():
        if isinstance(dep, tuple):
            inputs[edge] = [one(edge, d) for d in dep]
        else:
            inputs[edge] = one(edge, dep)
    for edge in inst.cell.req_cells:
        if edge not in inputs and edge not in inst.dynamic:
            inputs[edge] = None  # a call switch turned the edge off (core/iterative.py)
    if inst.increment > 1 and PREVIOUS_EDGE not in inputs:
        # planned as the stored resume point, but gone since: load it by key, or fail as an
        # input (not counted) rather than compute increment i from nothing
        inputs[PREVIOUS_EDGE] = one(PREVIOUS_EDGE, increment_of(inst, inst.increment - 1))
    return inputs


def _stop_if_cancelled(cancelled: threading.Event | None, inst: Instance) -> None:
    if cancelled is not None and cancelled.is_set():
        raise KeyboardInterrupt(f"{inst.label}: the caller was interrupted before make() ran")
