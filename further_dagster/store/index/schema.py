"""The tables of the SQL index, and the one schema version they carry.

    further_schema  one row: the schema `version` and the further_dagster that created it
    instances       one row per instance directory with a finished attempt (logic key)
    edges           parent_key depends on child_key through `edge` (position: index in a
                    swept edge's list, 0 otherwise; swept: the edge was a list)
    contributions   one row per stored contribution: codec and size; the recorded ones
                    (small JSON values) also hold their value (JSON, and a typed column)
    fields          (project, cell, origin, name, kind) for every Specs field (origin
                    `spec`) and recorded contribution (origin `contribution`) seen, once per
                    kind: what the per-cell views are generated from. A catalog that only
                    grows (an instance moved aside or deleted leaves its fields), so it is
                    the one table a rebuild may make smaller than the incremental index;
                    a row (origin `cell`, name '', kind '') marks every cell stored
    views_made      the per-cell views there are and the `fields` they were made from
    cells           a view: the distinct (project, project_version, cell, api_version,
                    logic_version) stored

Times are UTC. JSON columns are text (sorted keys), so both backends hold the same bytes.
Migration: a version row plus `create_all` (no alembic): an index of an older version is
rebuilt from the store (`further-dagster index rebuild`), one of a newer version is refused.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

SCHEMA_VERSION = 2
"""Bump when a table changes; an index of another version is rebuilt or refused."""

Kind = str
"""A recorded value's kind: bool, int, real, text, json or null."""

KINDS = ("bool", "int", "real", "text", "json", "null")

metadata = MetaData()

schema_table = Table(
    "further_schema",
    metadata,
    Column("version", Integer, primary_key=True),
    Column("created_by", String(64), nullable=False),
)

instances = Table(
    "instances",
    metadata,
    Column("key", String(32), primary_key=True),
    Column("project", String(128), nullable=False),
    Column("cell", String(128), nullable=False),
    # NULL for a project at the default version (1): only other versions enter keys
    Column("project_version", String(64)),
    Column("api_version", String(64)),
    Column("logic_version", String(64)),
    Column("status", String(16), nullable=False),
    Column("specs", Text),
    Column("opts", Text),
    Column("releases", Text),
    Column("labels", Text),
    Column("extra", Text),
    Column("created_at", DateTime(timezone=True)),
    Column("started_at", DateTime(timezone=True)),
    Column("finished_at", DateTime(timezone=True)),
    Column("duration_s", Float),
    Column("attempts", Integer),
    Column("failures", Integer),
    Column("host", String(255)),
    Column("username", String(128)),
    Column("pid", Integer),
    Column("slurm_job_id", String(64)),
    Column("git_commit", String(64)),
    Column("git_branch", String(255)),
    Column("git_dirty", Boolean),
    Column("error_type", String(255)),
    Column("error_message", Text),
    Column("path", String(512), nullable=False),
    Index("ix_instances_cell", "project", "cell"),
    Index("ix_instances_finished", "finished_at"),
)

edges = Table(
    "edges",
    metadata,
    Column("parent_key", String(32), primary_key=True),
    Column("edge", String(128), primary_key=True),
    Column("position", Integer, primary_key=True),
    Column("child_key", String(32), nullable=False),
    Column("swept", Boolean, nullable=False),
    Index("ix_edges_child", "child_key"),
)

contributions = Table(
    "contributions",
    metadata,
    Column("key", String(32), primary_key=True),
    Column("name", String(128), primary_key=True),
    Column("codec", String(64), nullable=False),
    Column("size", BigInteger),
    Column("recorded", Boolean, nullable=False),
    Column("kind", String(8)),
    Column("value_json", Text),
    Column("value_bool", Boolean),
    Column("value_int", BigInteger),
    Column("value_real", Float),
    Column("value_text", Text),
)

fields = Table(
    "fields",
    metadata,
    Column("project", String(128), primary_key=True),
    Column("cell", String(128), primary_key=True),
    Column("origin", String(16), primary_key=True),
    Column("name", String(128), primary_key=True),
    Column("kind", String(8), primary_key=True),
)

views_made = Table(
    "views_made",
    metadata,
    Column("name", String(260), primary_key=True),
    Column("signature", Text, nullable=False),
)

DATA_TABLES = (instances, edges, contributions, fields)
"""What a rebuild empties and refills (the schema row stays)."""

CELLS_VIEW = "cells"
CELLS_VIEW_SQL = (
    "CREATE VIEW cells AS SELECT project, project_version, cell, api_version, logic_version, "
    "COUNT(*) AS instances, MAX(finished_at) AS last_finished FROM instances "
    "GROUP BY project, project_version, cell, api_version, logic_version"
)

TABLE_NAMES = tuple(t.name for t in metadata.sorted_tables)


def view_name(project: str, cell: str) -> str:
    """The per-cell view: `<project>__<cell>` (both are identifiers, so it is one too)."""
    return f"{project}__{cell}"


__all__ = [
    "CELLS_VIEW",
    "CELLS_VIEW_SQL",
    "DATA_TABLES",
    "KINDS",
    "SCHEMA_VERSION",
    "TABLE_NAMES",
    "contributions",
    "edges",
    "fields",
    "instances",
    "metadata",
    "schema_table",
    "views_made",
    "view_name",
]
