"""QUERY: a sweep whose values are drawn from stored results (the Further seed: "the set of
execution instances in a VAR-like expansion is drawn dynamically from stored results").

`Req("fit", alpha=QUERY("SELECT DISTINCT alpha FROM study__fit WHERE status = 'success'"))`
expands like a VAR over the first column of the rows the SQL index returns when the call is
planned; the resolved values, never the query, enter keys. The engine supplies the index
(`query_runner`), so the core never touches the store.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from further_dagster.core.params import VAR
from further_dagster.errors import QueryError

Runner = Callable[[str], Sequence[Any]]
"""`runner(sql) -> values` (the first column of its rows, in order)."""

_RUNNER: contextvars.ContextVar[Runner | None] = contextvars.ContextVar(
    "further_query_runner", default=None
)


@contextlib.contextmanager
def query_runner(runner: Runner) -> Iterator[list[str]]:
    """Within the block, QUERY values come from `runner`; yields the queries that ran."""
    ran: list[str] = []

    def recording(sql: str) -> Sequence[Any]:
        ran.append(sql)
        return runner(sql)

    token = _RUNNER.set(recording)
    try:
        yield ran
    finally:
        _RUNNER.reset(token)


class QUERY(VAR):
    """A VAR whose values are the distinct values of the first column `sql` returns from the
    SQL index (README "The record" lists the tables and views).

    Args:
        sql: the query, e.g. "SELECT DISTINCT alpha FROM study__fit WHERE status = 'success'".
        allow_empty: an empty result is an empty sweep (the caller gets an empty list) instead
            of a `QueryError`.
    """

    __slots__ = ("sql", "allow_empty")

    def __init__(self, sql: str, *, allow_empty: bool = False) -> None:  # no VAR.__init__
        if not isinstance(sql, str) or not sql.strip():
            raise QueryError(f"QUERY({sql!r}): give the SQL text of a query")
        self.sql = sql
        self.allow_empty = allow_empty

    @property
    def values(self) -> tuple[Any, ...]:  # type: ignore[override]
        """The values now: the query runs against the index of the call being planned."""
        runner = _RUNNER.get()
        if runner is None:
            raise QueryError(
                f"{self!r} can only be resolved while a Session call is planned (it reads the "
                "store's SQL index); Dagster code locations do not resolve QUERY edges yet"
            )
        seen: dict[Any, None] = {}
        for value in runner(self.sql):
            seen.setdefault(value, None)
        if not seen and not self.allow_empty:
            raise QueryError(
                f"{self!r} returned no rows, so there is nothing to sweep. Check the query "
                "against `session.query(...)`, or write QUERY(..., allow_empty=True) to get an "
                "empty list instead."
            )
        return tuple(seen)

    def __repr__(self) -> str:
        return f"QUERY({self.sql!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, QUERY) and other.sql == self.sql

    def __hash__(self) -> int:
        return hash(("QUERY", self.sql))


__all__ = ["QUERY", "Runner", "query_runner"]
