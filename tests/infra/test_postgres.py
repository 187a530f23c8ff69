"""The throwaway PostgreSQL server: starts, serves psycopg2, stops without leftovers."""

from __future__ import annotations

import os
from pathlib import Path

import psycopg2  # type: ignore[import-untyped]
import pytest

from further_dagster.testing.postgres import PG_BIN_DIR, PostgresInfo, running_postgres

pytestmark = pytest.mark.postgres


@pytest.fixture(autouse=True)
def _binaries() -> None:
    # `make test` installs them (make system-deps): a skip here would hide a broken CI.
    if not (PG_BIN_DIR / "initdb").exists():
        pytest.fail(
            f"no {PG_BIN_DIR}/initdb: run `make system-deps` (apt-get install postgresql-15) "
            "or set FURTHER_PG_BIN",
            pytrace=False,
        )


def _server_processes(data_dir: Path) -> list[int]:
    """Live (non-zombie) processes whose command line names this data directory."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
            state = Path(f"/proc/{entry}/stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            continue
        if str(data_dir).encode() in cmdline and state != "Z":
            found.append(int(entry))
    return found


def _pid_alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def test_starts_serves_and_stops_cleanly(tmp_path: Path) -> None:
    with running_postgres(tmp_path, dbname="further_test") as pg:
        assert isinstance(pg, PostgresInfo)
        assert pg.host == "127.0.0.1" and pg.user == "postgres" and pg.dbname == "further_test"
        assert pg.url == f"postgresql+psycopg2://postgres@127.0.0.1:{pg.port}/further_test"
        assert _pid_alive(pg.pid)
        conn = psycopg2.connect(**pg.connect_kwargs())
        try:
            with conn, conn.cursor() as cur:
                cur.execute("CREATE TABLE t (k text PRIMARY KEY, v int)")
                cur.execute("INSERT INTO t VALUES ('a', 1), ('b', 2)")
                cur.execute("SELECT current_database(), sum(v) FROM t")
                assert cur.fetchone() == ("further_test", 3)
                cur.execute("SHOW server_version")
                (version,) = cur.fetchone()
                assert version.startswith("15.")
        finally:
            conn.close()
        with psycopg2.connect(pg.dsn) as conn2, conn2.cursor() as cur:  # the dsn works too
            cur.execute("SELECT 1")
        data_dir, socket_dir, pid = pg.data_dir, pg.socket_dir, pg.pid
    assert not _pid_alive(pid), "postmaster still running after exit"
    assert _server_processes(data_dir) == [], "postgres processes left behind"
    assert not socket_dir.exists(), "server directory not deleted"
    with pytest.raises(psycopg2.OperationalError):
        psycopg2.connect(**pg.connect_kwargs(), connect_timeout=2)


def test_two_servers_side_by_side_and_cleanup_on_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        with running_postgres(tmp_path) as a, running_postgres(tmp_path) as b:
            assert a.port != b.port
            pids = (a.pid, b.pid)
            raise RuntimeError("boom")
    assert not any(_pid_alive(pid) for pid in pids)
