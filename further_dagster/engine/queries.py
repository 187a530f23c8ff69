"""The SQL index as cells and plans read it: QUERY values at plan time, `self.db` in make()."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from further_dagster.core.query import QUERY
from further_dagster.store import Store

if TYPE_CHECKING:
    import pandas as pd

    from further_dagster.core.cell import Cell


def runner_for(store: Store) -> Any:
    """`runner(sql) -> first-column values` against `store`'s index, for `query_runner`."""

    def run(sql: str) -> Sequence[Any]:
        from further_dagster.engine.record import query

        frame = query(store, sql)  # type: ignore[arg-type]
        if frame.empty or len(frame.columns) == 0:
            return []
        values: list[Any] = frame.iloc[:, 0].tolist()
        return values

    return run


class Db:
    """`self.db` inside make(): read the store's SQL index (aggregates across sessions)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> pd.DataFrame:
        """`sql` against the index, as a DataFrame (README "The record")."""
        from further_dagster.engine.record import query

        return query(self._store, sql, params)  # type: ignore[arg-type]


def queries_of(cell: type[Cell]) -> dict[str, dict[str, str]]:
    """The QUERY texts of `cell`'s edges ({edge: {field: sql}}), for its provenance."""
    found: dict[str, dict[str, str]] = {}
    for edge, req in cell.req_cells.items():
        for name, value in req.values.items():
            if isinstance(value, QUERY):
                found.setdefault(edge, {})[name] = value.sql
    return found
