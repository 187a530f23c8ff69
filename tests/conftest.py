import os

import pytest


@pytest.fixture
def calls(tmp_path, monkeypatch):
    """Path of the make() call log; `calls.read()` lists (cell, key, pid, thread)."""
    path = tmp_path / "calls.log"
    monkeypatch.setenv("FURTHER_TEST_CALLS", str(path))

    class Calls:
        def read(self):
            if not path.exists():
                return []
            return [tuple(line.split()) for line in path.read_text().splitlines()]

        def count(self, cell=None):
            return len([c for c in self.read() if cell is None or c[0] == cell])

    return Calls()


# --- Dagster instance on SQLite or PostgreSQL (the same tests run on both) -----------------


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory):
    """One throwaway PostgreSQL server for the session, with a template database that already
    holds Dagster's schema (a fresh per-test database is then a fast copy)."""
    import dagster as dg

    from further_dagster.testing.postgres import PG_BIN_DIR, running_postgres

    if not (PG_BIN_DIR / "initdb").exists():
        # `make test` installs them first (make system-deps): a skip here would hide a broken CI.
        pytest.fail(
            f"no PostgreSQL binaries in {PG_BIN_DIR}: run `make system-deps` as root, or "
            "apt-get install postgresql-15, or point FURTHER_PG_BIN at a PostgreSQL 15 bin dir",
            pytrace=False,
        )
    with running_postgres(tmp_path_factory.mktemp("pg"), dbname="dagster_template") as pg:
        overrides = {"storage": {"postgres": {"postgres_db": pg.dagster_storage_config()}}}
        with dg.instance_for_test(overrides=overrides):
            pass  # creates and migrates every table in the template
        yield pg


def _fresh_postgres_db(pg, name: str) -> dict:
    import psycopg2  # type: ignore[import-untyped]

    conn = psycopg2.connect(**{**pg.connect_kwargs(), "dbname": "postgres"})
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}" TEMPLATE dagster_template')
    finally:
        conn.close()
    return {**pg.dagster_storage_config(), "db_name": name}


_DB_COUNTER = [0]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def dagster_backend(request):
    """ "sqlite" or "postgres": which instance storage `dagster_instance` uses."""
    return request.param


@pytest.fixture
def postgres_db(postgres_server) -> dict:
    """A fresh database with Dagster's schema on the session's server: its `postgres_db`
    config mapping (hostname, port, db_name, username, password, scheme)."""
    _DB_COUNTER[0] += 1
    return _fresh_postgres_db(postgres_server, f"t{os.getpid()}_{_DB_COUNTER[0]}")


@pytest.fixture
def dagster_instance_overrides(request, dagster_backend):
    """dagster.yaml overrides for a fresh instance on the chosen backend (a fresh PostgreSQL
    database per test); empty for SQLite."""
    if dagster_backend == "sqlite":
        return {}
    db = request.getfixturevalue("postgres_db")
    return {"storage": {"postgres": {"postgres_db": db}}}


@pytest.fixture
def dagster_instance(dagster_instance_overrides):
    """A persistent test instance (temporary DAGSTER_HOME) on SQLite or PostgreSQL storage."""
    import dagster as dg

    with dg.instance_for_test(overrides=dagster_instance_overrides or None) as instance:
        yield instance
