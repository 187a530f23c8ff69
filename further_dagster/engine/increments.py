"""Incrementing cells against the store: counting stored increments, loading earlier ones.

The Resolver asks how many increments of a base instance are stored (`StoredIncrements`, given
to it as `CallContext.increment_counter`) when it resolves an `Increments` instruction. Increment
i is computed only once increment i-1 is stored, so the stored increments are 1..S: S is found
by a galloping search of `Store.is_stored` stats (1, 2, 4, ... until one is missing, then a
binary search between the last two), about 2 log2(S) stats: 28 for a 10,000-increment chain,
never a scan of its directories. A damaged increment moved aside in the middle of a chain can
make the count stop before it; it is then recomputed when a call reaches it again.
"""

from __future__ import annotations

from further_dagster.core.cell import Cell, Contributions
from further_dagster.core.instances import Instance
from further_dagster.core.iterative import increment_key
from further_dagster.errors import IncrementsError
from further_dagster.store import Store


class StoredIncrements:
    """`counter(cell, base_key) -> number of stored increments` over one store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def __call__(self, cell: type[Cell], base: str) -> int:
        project, name = cell.project.name, cell.name
        is_stored = self.store.is_stored

        def stored(index: int) -> bool:
            return is_stored(project, name, increment_key(base, index))

        if not stored(1):
            return 0
        low, high = 1, 2  # stored(low) holds; find the first missing index
        while stored(high):
            low, high = high, high * 2
        while high - low > 1:
            middle = (low + high) // 2
            if stored(middle):
                low = middle
            else:
                high = middle
        return low


def increment_of(inst: Instance, index: int) -> Instance:
    """The instance of increment `index` of the same base instance as increment `inst`."""
    if not inst.increment:
        raise IncrementsError(f"{inst.label} is not an increment of an IncrementingCell")
    if isinstance(index, bool) or not isinstance(index, int) or index < 1:
        raise IncrementsError(f"increment {index!r} of {inst.label}: give an integer >= 1")
    return Instance(
        inst.cell,
        inst.specs,
        inst.opts,
        {},
        increment_key(inst.base, index),
        increment=index,
        base=inst.base,
    )


def result_instance(store: Store, cell: type[Cell], result: Contributions) -> Instance:
    """The increment instance a loaded result of an IncrementingCell is (its base key is read
    from the result's provenance)."""
    if result.increment is None:
        raise IncrementsError(
            f"{result.cell}@{result.key[:12]} is not an increment of an IncrementingCell"
        )
    extra = store.read_provenance(cell.project.name, cell.name, result.key).extra
    base = extra.get("increment_base")
    if not isinstance(base, str):
        raise IncrementsError(f"{result.cell}@{result.key[:12]}: its provenance has no base key")
    return Instance(
        cell,
        result.specs,
        cell.Opts(),
        {},
        result.key,
        increment=result.increment,
        base=base,
    )


__all__ = ["StoredIncrements", "increment_of", "result_instance"]
