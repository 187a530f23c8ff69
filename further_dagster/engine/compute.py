"""Compute or load one instance through the store: the single code path every executor uses.

A Session thread, a Dagster asset step, a Dask worker and a Slurm job all end up here, so the
memoization, locking and provenance rules are the same everywhere.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import Any

from further_dagster.core.cell import Contributions
from further_dagster.core.instances import Instance
from further_dagster.store import Outcome, Store

log = logging.getLogger("further")


class ContributionCache:
    """Contributions loaded during one call, so a shared dependency is read from disk once."""

    def __init__(self) -> None:
        self._values: MutableMapping[str, Contributions] = {}
        self._lock = threading.Lock()

    def get(self, store: Store, inst: Instance) -> Contributions:
        found = self._values.get(inst.key)
        if found is None:
            found = load(store, inst)
            with self._lock:
                self._values[inst.key] = found
        return found


def load(store: Store, inst: Instance) -> Contributions:
    """The stored contributions of `inst` (raises CorruptArtifactError if they are not whole)."""
    values = store.load(inst.cell.project.name, inst.cell.name, inst.key)
    return Contributions(values, key=inst.key, specs=inst.specs, cell=inst.cell.full_name)


def provenance_of(inst: Instance) -> dict[str, Any]:
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
    }


def ensure(store: Store, inst: Instance, cache: ContributionCache | None = None) -> Outcome:
    """Make sure `inst` is stored: a hit costs one stat; a miss loads the inputs, runs make()
    under the store's lease, checks the contributions and commits them atomically."""
    cache = cache or ContributionCache()
    cell = inst.cell

    def compute(artifact_dir: Path, cell_log: logging.Logger) -> Mapping[str, Any]:
        inputs: dict[str, Any] = {}
        for edge, dep in inst.deps.items():
            if isinstance(dep, tuple):
                inputs[edge] = [cache.get(store, d) for d in dep]
            else:
                inputs[edge] = cache.get(store, dep)
        maker = cell(
            specs=inst.specs,
            opts=inst.opts,
            inputs=inputs,
            key=inst.key,
            log=cell_log,
            artifact_dir=artifact_dir,
            release=inst.release,
        )
        return cell.check_contributions(maker.make())

    return store.ensure(cell.project.name, cell.name, inst.key, compute, provenance_of(inst))
