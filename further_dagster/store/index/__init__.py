"""The SQL index of the store: every instance, its edges and its small contributions, in SQL.

SQLite at `<root>/.index.sqlite` by default, PostgreSQL with `FURTHER_INDEX_URL` /
`ArtifactStore(index_url=...)`. It is derived from the store's files (the source of truth):
written right after each commit rename (`writer`), rebuildable from the files (`rebuild`),
queried through `query`. One concept per module:

    schema      the tables, the schema version        connection  engines, SQLite pragmas, checks
    rows        one instance directory -> its rows    writer      one transaction per commit
    views       the per-cell views                    rebuild     the index again from the files
    query       SQL -> DataFrame, rows, trees         collect     what gc deletes, and how

SQLAlchemy is imported only when an index is used: `import further_dagster` stays cheap.
"""
