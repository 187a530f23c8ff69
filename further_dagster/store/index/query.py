"""Reading the index: SQL to a pandas DataFrame, instance rows by cell and values, trees.

Every failure is an `IndexQueryError` carrying the database's message, the query and what
there is to query (tables and views), so a typo in a column name is fixed from the message.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from further_dagster.errors import IndexQueryError
from further_dagster.store.index import schema, views
from further_dagster.store.index.connection import connect

if TYPE_CHECKING:
    import pandas as pd


def _what_there_is(conn: Connection) -> str:
    try:
        cell_views = views.cell_views(conn)
    except sa.exc.SQLAlchemyError:
        cell_views = []
    shown = ", ".join(cell_views[:20]) + (" ..." if len(cell_views) > 20 else "")
    return (
        f"tables: {', '.join(schema.TABLE_NAMES)}; views: {schema.CELLS_VIEW}"
        + (f", {shown}" if shown else "")
        + " (README: 'The record')"
    )


def _failed(url: str, exc: sa.exc.SQLAlchemyError, sql: str) -> IndexQueryError:
    orig = getattr(exc, "orig", None) or exc
    message = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
    with connect(url) as conn:  # a fresh transaction: the failed one may be aborted
        there = _what_there_is(conn)
    return IndexQueryError(f"the index query failed: {message}\n  query: {sql}\n  {there}")


def _parse_times(frame: pd.DataFrame) -> pd.DataFrame:
    """SQLite returns times as text: make every `*_at` column a UTC datetime column."""
    import pandas as pd

    for column in frame.columns:
        if str(column).endswith("_at") and not pd.api.types.is_datetime64_any_dtype(frame[column]):
            frame[column] = pd.to_datetime(frame[column], utc=True, errors="coerce")
    return frame


def query_frame(url: str, sql: str, params: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """Run `sql` (with `:name` parameters) against the index; the rows as a DataFrame.

    Raises:
        IndexQueryError: the query failed (its message, the query, the tables and views).
        IndexConnectionError, IndexSchemaError: the index cannot be used.
    """
    import pandas as pd

    views.sync(url)
    failure: sa.exc.SQLAlchemyError | None = None
    frame = pd.DataFrame()
    try:
        with connect(url) as conn:
            result = conn.execute(sa.text(sql), dict(params or {}))
            if result.returns_rows:
                frame = pd.DataFrame(result.fetchall(), columns=list(result.keys()))
    except sa.exc.SQLAlchemyError as exc:
        failure = exc
    if failure is not None:
        raise _failed(url, failure, sql) from failure
    return _parse_times(frame)


def select_cell(
    url: str, project: str, cell: str, where: Mapping[str, Any] | None = None
) -> pd.DataFrame:
    """The rows of the view `<project>__<cell>` whose columns equal `where`'s values (a list
    or tuple value: any of them; None: IS NULL), oldest first. Empty if the cell has none."""
    import pandas as pd

    name = schema.view_name(project, cell)
    views.sync(url)
    with connect(url) as conn:
        if name not in views.cell_views(conn):
            return pd.DataFrame(columns=list(views.BASE_COLUMNS))
        columns = [c["name"] for c in sa.inspect(conn).get_columns(name)]
    clauses: list[str] = []
    params: dict[str, Any] = {}
    for n, (column, value) in enumerate((where or {}).items()):
        if column not in columns:
            raise IndexQueryError(
                f"{project}.{cell} has no column {column!r} in the index view {name}; its "
                f"columns are {', '.join(columns)} (Specs fields and recorded contributions)"
            )
        if value is None:
            clauses.append(f'"{column}" IS NULL')
        elif isinstance(value, list | tuple | set | frozenset):
            names = []
            for m, item in enumerate(value):
                params[f"w{n}_{m}"] = item
                names.append(f":w{n}_{m}")
            clauses.append(f'"{column}" IN ({", ".join(names) or "NULL"})')
        else:
            params[f"w{n}"] = value
            clauses.append(f'"{column}" = :w{n}')
    sql = f'SELECT * FROM "{name}"' + (f" WHERE {' AND '.join(clauses)}" if clauses else "")
    return query_frame(url, sql + " ORDER BY created_at, key", params)


def find_keys(url: str, key_or_prefix: str) -> list[dict[str, Any]]:
    """The instance rows whose key starts with `key_or_prefix`."""
    i = schema.instances
    with connect(url) as conn:
        rows = conn.execute(
            sa.select(i).where(i.c.key.like(f"{key_or_prefix}%")).order_by(i.c.key).limit(11)
        )
        return [dict(r._mapping) for r in rows]


@dataclass
class Node:
    """One instance of an explained tree, with its dependencies by edge."""

    row: dict[str, Any] | None
    key: str
    edge: str | None = None
    children: list[Node] = field(default_factory=list)
    recorded: dict[str, Any] = field(default_factory=dict)


def tree(url: str, key: str, *, depth: int = 20) -> Node:
    """The instance `key` and its dependencies (from `edges`), as far as the index knows."""
    i, e, c = schema.instances, schema.edges, schema.contributions
    with connect(url) as conn:

        def node(k: str, edge: str | None, level: int, seen: frozenset[str]) -> Node:
            row = conn.execute(sa.select(i).where(i.c.key == k)).first()
            found = Node(row=dict(row._mapping) if row is not None else None, key=k, edge=edge)
            for name, value in conn.execute(
                sa.select(c.c.name, c.c.value_json)
                .where(c.c.key == k, c.c.recorded.is_(True))
                .order_by(c.c.name)
            ):
                found.recorded[name] = json.loads(value)
            if level >= depth or k in seen:
                return found
            deps = conn.execute(
                sa.select(e.c.edge, e.c.position, e.c.child_key, e.c.swept)
                .where(e.c.parent_key == k)
                .order_by(e.c.edge, e.c.position)
            ).all()
            for edge_name, position, child, swept in deps:
                label = f"{edge_name}[{position}]" if swept else edge_name
                found.children.append(node(child, label, level + 1, seen | {k}))
            return found

        return node(key, None, 0, frozenset())


def as_utc(value: Any) -> dt.datetime | None:
    """A time read from the index as an aware UTC datetime (SQLite drops the zone)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    if not isinstance(value, dt.datetime):
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


__all__ = ["Node", "as_utc", "find_keys", "query_frame", "select_cell", "tree"]
