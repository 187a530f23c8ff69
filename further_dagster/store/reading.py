"""The read side of the filesystem store: a result is returned only when it is intact.

`ResultReading` is the part of `ArtifactStore` that loads, checks (`store.integrity`),
audits and quarantines committed results; `ArtifactStore` (artifact_store.py) adds computing,
leases and attempts. Split by responsibility: what a reader trusts lives here.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from further_dagster import settings
from further_dagster.errors import (
    CodecError,
    CorruptArtifactError,
    StoreError,
    UntrustedPickleError,
)
from further_dagster.store import integrity, layout
from further_dagster.store.base import Expected
from further_dagster.store.codecs import (
    JsonCodec,
    codec_by_name,
    file_digest,
    read_bytes_with,
    read_with,
)
from further_dagster.store.integrity import ResultDir
from further_dagster.store.provenance import process_facts
from further_dagster.store.records import (
    Manifest,
    ManifestEntry,
    Provenance,
    QuarantineRecord,
    read_record,
    utcnow,
    write_record,
)

log = logging.getLogger("further.store")


@dataclass(frozen=True, slots=True)
class Audit:
    """One committed result as `ArtifactStore.audit` (and `further-dagster verify`) found it.

    `problem` is None when it is intact; `unverified` lists the contributions whose manifest
    entry records no digest (committed before digests were recorded).
    """

    project: str
    cell: str
    key: str
    problem: str | None
    unverified: list[str]

    @property
    def label(self) -> str:
        return f"{self.project}.{self.cell}@{self.key}"


def _new_damaged_dir(inst: Path) -> Path:
    """A fresh `<instance>/damaged-<utc stamp>` directory (a suffix if the stamp is taken)."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    for n in range(1000):
        damaged = layout.damaged_dir(inst, stamp if n == 0 else f"{stamp}-{n}")
        try:
            damaged.mkdir()
        except FileExistsError:
            continue
        return damaged
    raise StoreError(f"cannot create a damaged-{stamp} directory in {inst}")


class ResultReading:
    """Loading, checking, auditing and quarantining committed results (see module docstring).

    Needs `root`, `_root_str`, `verify`, `shared`, `trust` and `instance_dir` from the store.
    """

    root: Path
    _root_str: str
    verify: settings.VerifyMode
    shared: bool
    trust: frozenset[str]

    def instance_dir(self, project: str, cell: str, key: str) -> Path:
        raise NotImplementedError

    def load(
        self,
        project: str,
        cell: str,
        key: str,
        names: Sequence[str] | None = None,
        *,
        expect: Expected | None = None,
    ) -> dict[str, Any]:
        """Decode the stored contributions (all, or only `names`) into a dict, after checking
        them (see `store.integrity`): real directories, a consistent manifest (and `expect`),
        sizes and, with `verify="digest"`, digests; pickles only where trusted.

        Raises:
            StoreError: the key is not stored, or a path of it is a symlink.
            CorruptArtifactError: the result is damaged (naming cell, key and file); move it
                aside with `quarantine` (the engine does) and the next call recomputes it.
            UntrustedPickleError: a pickle the store does not trust (naming the fix).
        """
        if isinstance(names, str):
            raise StoreError(f"names must be a sequence of names, not the str {names!r}")
        where = integrity.result_dir(self._root_str, project, cell, key)
        manifest = self._read_manifest(where.path, project, cell, key)
        entries = manifest.contributions
        problem = integrity.names_problem(manifest, expect)
        if problem is not None:
            self._corrupt(project, cell, key, layout.manifest_path(where.path), problem)
        wanted = list(entries) if names is None else list(names)
        missing = [n for n in wanted if n not in entries]
        if missing:
            raise CorruptArtifactError(
                f"{project}.{cell}@{key}: contribution(s) {missing} are not in {where.path} "
                f"(stored: {sorted(entries)}); if the cell declares them now, bump its "
                f"logic_version so that a new key is computed"
            )
        return {
            n: self._read_entry(where, project, cell, key, n, entries[n], expect) for n in wanted
        }

    def _read_entry(
        self,
        where: ResultDir,
        project: str,
        cell: str,
        key: str,
        name: str,
        entry: ManifestEntry,
        expect: Expected | None,
    ) -> Any:
        problem = integrity.entry_problem(name, entry, expect)
        if problem is not None:
            self._corrupt(project, cell, key, layout.manifest_path(where.path), problem)
        path = where.path / entry.file
        codec = codec_by_name(entry.codec)
        if codec.runs_code:
            self._check_reader_trusted(project, cell, key, name, path, expect)
        opened = integrity.open_file(path)
        if opened is None:
            self._corrupt(project, cell, key, path, f"{entry.file} is missing")
        fh, st = opened
        with fh:
            if codec.runs_code and not self.shared:
                self._check_owner(project, cell, key, where, path, st)
            digest = self.verify == "digest"
            data, problem = integrity.verified_bytes(fh, st, entry, digest)
            if problem is not None:
                self._corrupt(project, cell, key, path, problem)
            try:
                if data is not None:
                    return read_bytes_with(codec, data, path)
                return read_with(codec, fh, path)
            except CorruptArtifactError as exc:
                if digest and entry.blake2b is not None and not isinstance(codec, JsonCodec):
                    # the committed bytes, which this process's numpy/pyarrow/classes cannot
                    # read: not damage (JSON is read the same everywhere, so it has no excuse)
                    raise CodecError(
                        f"{project}.{cell}@{key}: {path} is intact (its digest matches) but "
                        f"cannot be decoded here: {exc}. The library that wrote it may differ "
                        f"from this process's (its version is in provenance.json)"
                    ) from exc
                self._corrupt(project, cell, key, path, str(exc))

    def _check_reader_trusted(
        self, project: str, cell: str, key: str, name: str, path: Path, expect: Expected | None
    ) -> None:
        reader = expect.reader if expect is not None else None
        if reader is None or reader == project or project in self.trust:
            return
        raise UntrustedPickleError(
            f"{project}.{cell}@{key}: contribution {name!r} ({path}) is a pickle of project "
            f"{project!r}, read as an input of a cell of project {reader!r}, which does not "
            f"trust {project!r}: unpickling runs code the file carries. If you trust "
            f"{project!r}'s results, declare it: Session(trust=[{project!r}]) or "
            f"build_definitions(..., trust=[{project!r}]) (ArtifactStore(trust=[...]) for a "
            f"store of your own); or give {project}.{cell} a codec that is not pickle "
            f"(codec = 'json' | 'npy' | 'parquet')"
        )

    def _check_owner(
        self,
        project: str,
        cell: str,
        key: str,
        where: ResultDir,
        path: Path,
        st: os.stat_result,
    ) -> None:
        inst = where.path.parent
        for what, info in ((inst, where.inst), (where.path, where.result), (path, st)):
            why = integrity.writable_by_others(info)
            if why is not None:
                raise UntrustedPickleError(
                    f"{project}.{cell}@{key}: refusing to unpickle {path}: {what} {why}, so "
                    f"another user could have written it, and unpickling runs code the file "
                    f"carries. If the root {self.root} is shared on purpose, set "
                    f"{settings.ENV_SHARED_STORE}=1 (ArtifactStore(shared=True)); otherwise "
                    f"use a root of your own (FURTHER_ROOT), or move {inst} away and recompute"
                )

    def _corrupt(self, project: str, cell: str, key: str, path: Path, problem: str) -> NoReturn:
        raise CorruptArtifactError(
            f"{project}.{cell}@{key} is damaged: {problem} ({path}). Nothing of it was "
            f"returned; move it aside with quarantine() or `further-dagster verify "
            f"--quarantine` (a Session or a Dagster step does so itself) and the next call "
            f"recomputes it"
        )

    def is_intact(
        self, project: str, cell: str, key: str, *, expect: Expected | None = None
    ) -> bool:
        """True if the key is stored and passes the cheap checks (real directories, a readable
        and consistent manifest, every file present with its recorded size; no file is read).
        A symlink on the way is not intact."""
        try:
            return self._problem(project, cell, key, expect, digest=False) is None
        except StoreError:
            return False

    def audit(self, project: str, cell: str, key: str, *, digest: bool = True) -> Audit:
        """What `further-dagster verify` reports for one committed result: its first problem
        (None if intact; digests compared when `digest`), and the contributions whose size or
        digest the manifest does not record (committed before they were)."""
        manifest: Manifest | None = None
        try:
            problem = self._problem(project, cell, key, None, digest=digest)
            manifest = self.read_manifest(project, cell, key) if problem is None else None
        except StoreError as exc:
            problem = str(exc)
        unverified = (
            sorted(n for n, e in manifest.contributions.items() if e.blake2b is None)
            if manifest is not None
            else []
        )
        return Audit(project, cell, key, problem, unverified)

    def _problem(
        self, project: str, cell: str, key: str, expect: Expected | None, *, digest: bool
    ) -> str | None:
        where = integrity.result_dir(self._root_str, project, cell, key)
        try:
            manifest = self._read_manifest(where.path, project, cell, key)
        except CorruptArtifactError as exc:
            return str(exc)
        problem = integrity.names_problem(manifest, expect)
        if problem is not None:
            return problem
        for name, entry in manifest.contributions.items():
            try:
                problem = integrity.entry_problem(name, entry, expect)
            except CodecError:  # not registered here: no damage, checked as far as possible
                problem = integrity.unregistered_entry_problem(name, entry)
            if problem is not None:
                return problem
            path = where.path / entry.file
            if not digest:
                st = integrity.file_state(path)
                if st is None:
                    return f"{entry.file} is missing"
                problem = integrity.size_problem(entry, st.st_size)
                if problem is not None:
                    return problem
                continue
            opened = integrity.open_file(path)
            if opened is None:
                return f"{entry.file} is missing"
            fh, st = opened
            with fh:
                problem = integrity.size_problem(entry, st.st_size)
                if problem is None and entry.blake2b is not None:
                    problem = integrity.digest_problem(entry, file_digest(fh))
            if problem is not None:
                return problem
        return None

    def quarantine(self, project: str, cell: str, key: str, reason: str) -> Path | None:
        """Move `<instance>/result` to `<instance>/damaged-<utc stamp>/result`, with
        `reason.json` beside it (the reason given and what the store's own checks find), so
        the key is no longer stored and the next `ensure` computes it again. Nothing is
        deleted. Returns the `damaged-*` directory, or None if no result was committed (another
        process moved it first).

        Raises:
            StoreError: a directory of the instance is a symlink (nothing is moved).
        """
        integrity.check_instance_dirs(self._root_str, project, cell, key)
        inst = self.instance_dir(project, cell, key)
        result = layout.result_dir(inst)
        if integrity.real_dir(str(result)) is None:
            return None
        try:
            found = self._problem(project, cell, key, None, digest=self.verify == "digest")
        except StoreError as exc:
            found = str(exc)
        damaged = _new_damaged_dir(inst)
        try:
            os.rename(result, layout.result_dir(damaged))
        except FileNotFoundError:
            os.rmdir(damaged)
            return None
        facts = process_facts()
        write_record(
            layout.reason_path(damaged),
            QuarantineRecord(
                project=project,
                cell=cell,
                key=key,
                reason=reason,
                found=found,
                moved_at=utcnow(),
                host=facts.hostname,
                pid=facts.pid,
                user=facts.user,
            ),
        )
        log.warning(
            "%s.%s@%s: damaged result moved aside to %s (%s); the next call recomputes it",
            project,
            cell,
            key[:8],
            damaged,
            reason,
        )
        return damaged

    def read_manifest(self, project: str, cell: str, key: str) -> Manifest:
        """The committed manifest (contribution name -> file, codec, size and digest)."""
        where = integrity.result_dir(self._root_str, project, cell, key)
        return self._read_manifest(where.path, project, cell, key)

    def read_provenance(self, project: str, cell: str, key: str) -> Provenance:
        """The provenance of the committed result (`StoreError` if not stored)."""
        where = integrity.result_dir(self._root_str, project, cell, key)
        path = layout.provenance_path(where.path)
        try:
            return read_record(path, Provenance)
        except FileNotFoundError:
            self._raise_missing(where.path, path, project, cell, key)

    def _read_manifest(self, result: Path, project: str, cell: str, key: str) -> Manifest:
        path = layout.manifest_path(result)
        try:
            return read_record(path, Manifest)
        except FileNotFoundError:
            self._raise_missing(result, path, project, cell, key)
        except CorruptArtifactError as exc:
            self._corrupt(project, cell, key, path, f"unreadable manifest: {exc}")

    def _raise_missing(
        self, result: Path, path: Path, project: str, cell: str, key: str
    ) -> NoReturn:
        if not result.is_dir():
            raise StoreError(
                f"{project}.{cell}@{key} is not stored (no {result}); compute it with "
                f"ArtifactStore.ensure first, or check is_stored()"
            ) from None
        self._corrupt(project, cell, key, path, f"{path.name} is missing")


__all__ = ["Audit", "ResultReading"]
