"""One view per cell, `<project>__<cell>`: its instances with Specs and recorded contributions
as columns.

    SELECT alpha, score FROM study__fit WHERE status = 'success' AND alpha < 1

Columns: `key`, `status`, `project_version` (NULL: the default version 1), `api_version`,
`logic_version`, `created_at`, `finished_at`,
`duration_s`, `host`, `slurm_job_id`, then one per Specs field (from the `specs` JSON), then
one per recorded contribution (from `contributions`). A column's type follows the kinds seen
for it (`fields`): bool, int, real (ints and floats mixed), text, else JSON text. A Specs field
or contribution whose name is taken by an earlier column is named `spec_<name>` /
`out_<name>`.

A commit only records new fields (`fields`); the views are made when the index is read through
further_dagster (`sync`: `Session.query`, `instances`, `results`, `explain`, the CLI) and by
`further-dagster index rebuild`, so no commit pays for DDL (which would also invalidate every
other connection's prepared statements). A view is remade when its cell's fields changed
(`views_made` keeps what each was made from).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import sqlalchemy as sa
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.sql import compiler

from further_dagster.core.names import is_identifier
from further_dagster.store.index import schema

BASE_COLUMNS = (
    "key",
    "status",
    "project_version",
    "api_version",
    "logic_version",
    "created_at",
    "finished_at",
    "duration_s",
    "host",
    "slurm_job_id",
)

_SQL_TYPES = {
    "postgresql": {"bool": "boolean", "int": "bigint", "real": "double precision"},
}
_VALUE_COLUMN = {
    "bool": "value_bool",
    "int": "value_int",
    "real": "value_real",
    "text": "value_text",
    "json": "value_json",
}


def merged_kind(kinds: Iterable[str]) -> str:
    """The column kind of a field seen with `kinds` (order does not matter)."""
    seen = set(kinds) - {"null"}
    if not seen:
        return "json"
    if seen == {"int", "real"}:
        return "real"
    if len(seen) == 1:
        return next(iter(seen))
    return "json"


def _spec_expr(dialect: str, name: str, kind: str) -> str:
    """The SQL reading Specs field `name` (an identifier, so safe to inline) as `kind`."""
    if dialect == "postgresql":
        if kind == "json":
            return f"(CAST(i.specs AS jsonb) -> '{name}')::text"
        text = f"(CAST(i.specs AS jsonb) ->> '{name}')"
        sql_type = _SQL_TYPES["postgresql"].get(kind)
        return f"{text}::{sql_type}" if sql_type else text
    return f"json_extract(i.specs, '$.{name}')"  # SQLite gives the JSON value's own SQL type


def view_sql(
    dialect: str, project: str, cell: str, fields: Mapping[tuple[str, str], Iterable[str]]
) -> str:
    """`CREATE VIEW` of one cell; `fields` maps (origin, name) to the kinds seen."""
    preparer = compiler.IdentifierPreparer(sqlite.dialect())
    q = preparer.quote_identifier
    taken = set(BASE_COLUMNS)
    columns = [f"i.{q(c)} AS {q(c)}" for c in BASE_COLUMNS]
    joins = []
    ordered = sorted(fields.items(), key=lambda item: (item[0][0] != "spec", item[0][1]))
    for n, ((origin, name), kinds) in enumerate(ordered):
        if not is_identifier(name):  # names come from files: only identifiers are inlined
            continue
        kind = merged_kind(kinds)
        column = name
        if column in taken:
            column = f"{'spec' if origin == 'spec' else 'out'}_{name}"
        if column in taken:
            continue
        taken.add(column)
        if origin == "spec":
            columns.append(f"{_spec_expr(dialect, name, kind)} AS {q(column)}")
        else:
            alias = f"c{n}"
            joins.append(
                f"LEFT JOIN contributions {alias} ON {alias}.key = i.key AND "
                f"{alias}.name = '{name}'"
            )
            columns.append(f"{alias}.{_VALUE_COLUMN[kind]} AS {q(column)}")
    return (
        f"CREATE VIEW {q(schema.view_name(project, cell))} AS SELECT {', '.join(columns)} "
        f"FROM instances i {' '.join(joins)} WHERE i.project = '{project}' AND "
        f"i.cell = '{cell}'"
    )


Catalog = dict[tuple[str, str], dict[tuple[str, str], list[str]]]


def catalog(conn: Connection) -> Catalog:
    """(project, cell) -> (origin, name) -> the kinds seen, from `fields`."""
    f = schema.fields
    found: Catalog = {}
    for project, cell, origin, name, kind in conn.execute(
        sa.select(f.c.project, f.c.cell, f.c.origin, f.c.name, f.c.kind)
    ):
        fields = found.setdefault((project, cell), {})
        if origin != "cell":
            fields.setdefault((origin, name), []).append(kind)
    return found


def _signature(fields: Mapping[tuple[str, str], Iterable[str]]) -> str:
    return ";".join(
        f"{origin}:{name}:{merged_kind(kinds)}" for (origin, name), kinds in sorted(fields.items())
    )


def stale(conn: Connection) -> dict[tuple[str, str], str]:
    """The cells whose view is missing or was made from other fields -> their new signature."""
    made = {
        name: signature
        for name, signature in conn.execute(
            sa.select(schema.views_made.c.name, schema.views_made.c.signature)
        )
    }
    out = {}
    for (project, cell), fields in catalog(conn).items():
        signature = _signature(fields)
        if made.get(schema.view_name(project, cell)) != signature:
            out[(project, cell)] = signature
    return out


def refresh(conn: Connection, cells: Iterable[tuple[str, str]] | None = None) -> None:
    """(Re)create the views of `cells` (default: the stale ones) inside `conn`'s transaction."""
    everything = catalog(conn)
    wanted = stale(conn) if cells is None else {c: "" for c in cells}
    dialect = conn.dialect.name
    v = schema.views_made
    for project, cell in sorted(wanted):
        fields = everything.get((project, cell), {})
        name = schema.view_name(project, cell)
        conn.exec_driver_sql(f'DROP VIEW IF EXISTS "{name}"')
        conn.exec_driver_sql(view_sql(dialect, project, cell, fields))
        conn.execute(sa.delete(v).where(v.c.name == name))
        conn.execute(sa.insert(v).values(name=name, signature=_signature(fields)))


def sync(url: str) -> None:
    """Make every stale view (a read first; the write lock only when one is stale)."""
    from further_dagster.store.index.connection import connect

    with connect(url) as conn:
        if not stale(conn):
            return
    with connect(url, write=True) as conn:
        if conn.dialect.name == "postgresql":  # concurrent view DDL would conflict
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(1178944)")
        refresh(conn)


def cell_views(conn: Connection) -> list[str]:
    """The per-cell views there are (names with `__`)."""
    return sorted(v for v in sa.inspect(conn).get_view_names() if "__" in v)


def drop_all(conn: Connection) -> None:
    """Drop every view of the index (before its tables are replaced)."""
    for name in [*cell_views(conn), schema.CELLS_VIEW]:
        conn.exec_driver_sql(f'DROP VIEW IF EXISTS "{name}"')


__all__ = [
    "BASE_COLUMNS",
    "catalog",
    "cell_views",
    "drop_all",
    "merged_kind",
    "refresh",
    "stale",
    "sync",
    "view_sql",
]
