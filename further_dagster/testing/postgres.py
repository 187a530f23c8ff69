"""A throwaway PostgreSQL server for tests, from the machine's PostgreSQL 15 binaries.

    with running_postgres(tmp_path) as pg:
        engine = sqlalchemy.create_engine(pg.url)    # postgresql+psycopg2://postgres@127.0.0.1:PORT/test
        psycopg2.connect(**pg.connect_kwargs())

initdb (trust auth, no fsync) into a fresh directory, `pg_ctl start` on a free 127.0.0.1 port with
its unix socket in that directory, one database created; on exit the server is stopped and the
directory deleted. Nothing outside the project is needed: no system service, no config file.
As root the server runs as user `postgres` (PostgreSQL refuses root); otherwise as the caller.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from further_dagster import settings

# PG_BIN_DIR is importable too, through __getattr__ below (ruff cannot see it in __all__).
__all__ = ["PostgresError", "PostgresInfo", "running_postgres"]

_SERVER_USER = "postgres"  # the OS user the server runs as when we are root
_START_ATTEMPTS = 3  # a free port can be taken between choosing and binding it


def __getattr__(name: str) -> Any:
    # PG_BIN_DIR is resolved when asked for, so FURTHER_PG_BIN set after import still counts.
    if name == "PG_BIN_DIR":
        return settings.pg_bin()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class PostgresError(RuntimeError):
    """The throwaway PostgreSQL server could not be set up, started or stopped."""


@dataclass(frozen=True)
class PostgresInfo:
    """How to reach a running throwaway server (trust auth: no password)."""

    host: str
    port: int
    user: str
    dbname: str
    data_dir: Path
    socket_dir: Path
    pid: int

    @property
    def url(self) -> str:
        """SQLAlchemy URL; psycopg2 named explicitly (SQLAlchemy 2.1 reads bare postgresql://
        as psycopg 3)."""
        return f"postgresql+psycopg2://{self.user}@{self.host}:{self.port}/{self.dbname}"

    @property
    def dsn(self) -> str:
        """libpq keyword/value connection string."""
        return f"host={self.host} port={self.port} user={self.user} dbname={self.dbname}"

    def connect_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `psycopg2.connect`."""
        return {"host": self.host, "port": self.port, "user": self.user, "dbname": self.dbname}

    def fresh_database(self, prefix: str = "db") -> str:
        """Create an empty database `<prefix>_<random>` on this server and return its name
        (one per test, so tests sharing the server never see each other's tables)."""
        import uuid

        import psycopg2  # type: ignore[import-untyped]

        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        conn = psycopg2.connect(**{**self.connect_kwargs(), "dbname": "postgres"})
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()
        return name

    def dagster_storage_config(self) -> dict[str, Any]:
        """The `storage: postgres: postgres_db:` mapping for a dagster.yaml."""
        return {
            "username": self.user,
            "password": "",
            "hostname": self.host,
            "db_name": self.dbname,
            "port": self.port,
            "scheme": "postgresql+psycopg2",
        }


@contextlib.contextmanager
def running_postgres(
    base_dir: str | Path,
    *,
    dbname: str = "test",
    bin_dir: str | Path | None = None,
) -> Iterator[PostgresInfo]:
    """Start a throwaway PostgreSQL server, yield how to reach it, stop and delete it on exit.

    Args:
        base_dir: where to create the server's directory (a fresh `pg-*` subdirectory). When
            running as root and user `postgres` cannot enter it (pytest's `tmp_path` is under a
            0700 directory), the server directory goes to the system temp dir instead; it is
            deleted on exit all the same.
        dbname: the database to create.
        bin_dir: PostgreSQL binaries; default `$FURTHER_PG_BIN` or /usr/lib/postgresql/15/bin.

    Raises:
        PostgresError: a binary is missing, or initdb / start / createdb failed (with its log).
    """
    bins = settings.pg_bin(bin_dir)
    for tool in ("initdb", "pg_ctl", "createdb", "postgres"):
        if not (bins / tool).exists():
            raise PostgresError(
                f"{bins / tool} not found: install PostgreSQL 15 (apt-get install postgresql-15) "
                "or point FURTHER_PG_BIN at its bin directory"
            )
    as_root = os.geteuid() == 0
    owner = pwd.getpwnam(_SERVER_USER) if as_root else pwd.getpwuid(os.geteuid())
    base = Path(base_dir).absolute()
    base.mkdir(parents=True, exist_ok=True)
    if as_root and not _user_can_enter(owner.pw_name, base):
        base = Path(tempfile.gettempdir())
    root = Path(tempfile.mkdtemp(prefix="pg-", dir=base))
    data_dir = root / "data"
    log_file = root / "server.log"
    pid: int | None = None
    try:
        os.chmod(root, 0o700)
        if as_root:
            os.chown(root, owner.pw_uid, owner.pw_gid)

        def run(*command: str | Path) -> None:
            argv = [str(c) for c in command]
            if as_root:
                argv = ["runuser", "-u", owner.pw_name, "--", *argv]
            done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120)
            if done.returncode != 0:
                log = log_file.read_text(errors="replace")[-3000:] if log_file.exists() else ""
                raise PostgresError(
                    f"{' '.join(argv)} failed (exit {done.returncode}):\n"
                    f"{done.stdout}{done.stderr}{log}"
                )

        run(
            bins / "initdb",
            "-D",
            data_dir,
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
            "--encoding=UTF8",
            "--locale=C",
        )
        port = 0
        for attempt in range(_START_ATTEMPTS):
            port = _free_port()
            options = (
                f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off"
            )
            try:
                run(
                    bins / "pg_ctl",
                    "-D",
                    data_dir,
                    "-l",
                    log_file,
                    "-o",
                    options,
                    "-w",
                    "-t",
                    "60",
                    "start",
                )
                break
            except PostgresError:
                if attempt == _START_ATTEMPTS - 1:
                    raise
        pid = _postmaster_pid(data_dir)
        run(bins / "createdb", "-h", root, "-p", str(port), "-U", "postgres", dbname)
        yield PostgresInfo(
            host="127.0.0.1",
            port=port,
            user="postgres",
            dbname=dbname,
            data_dir=data_dir,
            socket_dir=root,
            pid=pid,
        )
    finally:
        try:
            if pid is not None or (data_dir / "postmaster.pid").exists():
                _stop(bins, data_dir, owner.pw_name if as_root else None, pid)
        finally:
            shutil.rmtree(root, ignore_errors=True)


def _stop(bins: Path, data_dir: Path, user: str | None, pid: int | None) -> None:
    argv = [str(bins / "pg_ctl"), "-D", str(data_dir), "-m", "fast", "-w", "-t", "30", "stop"]
    if user is not None:
        argv = ["runuser", "-u", user, "--", *argv]
    subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)
    if pid is None:
        return
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _alive(pid):  # pg_ctl gave up: do not leave a server behind
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 9)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:
        return True


def _postmaster_pid(data_dir: Path) -> int:
    # postmaster.pid belongs to the server user, mode 0600: root reads it, others own it.
    return int((data_dir / "postmaster.pid").read_text().splitlines()[0])


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _user_can_enter(user: str, path: Path) -> bool:
    done = subprocess.run(
        ["runuser", "-u", user, "--", "test", "-x", str(path)],
        capture_output=True,
        check=False,
    )
    return done.returncode == 0
