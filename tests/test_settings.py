"""Every FURTHER_* setting is read in one module and a bad value is a clear ConfigurationError."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from further_dagster import settings
from further_dagster.errors import ConfigurationError, FurtherError
from further_dagster.settings import Settings
from further_dagster.store import ArtifactStore, ReleaseHistory
from further_dagster.store.lease import Lease

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def _no_further_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("FURTHER_"):
            monkeypatch.delenv(name)


BAD_VALUES = [
    ("FURTHER_LEASE_SECS", "inf"),
    ("FURTHER_LEASE_SECS", "nan"),
    ("FURTHER_LEASE_SECS", "abc"),
    ("FURTHER_LEASE_SECS", "0.1"),
    ("FURTHER_LEASE_SECS", "-1"),
    ("FURTHER_WAIT_TIMEOUT_SECS", "nan"),
    ("FURTHER_WAIT_TIMEOUT_SECS", "inf"),
    ("FURTHER_WAIT_TIMEOUT_SECS", "-5"),
    ("FURTHER_WAIT_TIMEOUT_SECS", "abc"),
    ("FURTHER_MAX_ATTEMPTS", "0"),
    ("FURTHER_MAX_ATTEMPTS", "abc"),
    ("FURTHER_MAX_ATTEMPTS", "2.5"),
]


@pytest.mark.parametrize(("variable", "value"), BAD_VALUES)
def test_a_bad_value_is_a_configuration_error_naming_variable_and_value(
    variable: str, value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigurationError) as info:
        Settings.from_env()
    message = str(info.value)
    assert f"{variable}={value!r}" in message
    assert "must be" in message  # what is allowed
    assert isinstance(info.value, FurtherError)


@pytest.mark.parametrize(("variable", "value"), BAD_VALUES)
def test_a_store_built_under_a_bad_value_refuses_to_start(
    variable: str, value: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigurationError, match=variable):
        ArtifactStore(tmp_path / "root")


def test_further_root_pointing_at_a_file_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    a_file = tmp_path / "not-a-dir"
    a_file.write_text("x")
    monkeypatch.setenv("FURTHER_ROOT", str(a_file))
    for build in (settings.store_root, Settings.from_env, ArtifactStore, ReleaseHistory):
        with pytest.raises(ConfigurationError) as info:
            build()
        message = str(info.value)
        assert f"FURTHER_ROOT={str(a_file)!r}" in message and "existing file" in message


def test_further_root_under_a_file_is_refused_too(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("x")
    monkeypatch.setenv("FURTHER_ROOT", str(a_file / "store"))
    with pytest.raises(ConfigurationError, match=f"lies under {a_file}"):
        settings.store_root()


def test_an_explicit_root_that_is_a_file_names_the_argument(tmp_path: Path) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(ConfigurationError, match=r"^root="):
        ArtifactStore(a_file)


def test_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    project = tmp_path / "proj"
    (project / "src").mkdir(parents=True)
    (project / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    monkeypatch.chdir(project / "src")
    assert Settings.from_env() == Settings(
        root=project / ".further",
        lease_s=15.0,  # issue #8: was 60
        wait_timeout_s=3600.0,
        max_attempts=3,
        dask_address=None,
        pg_bin=Path("/usr/lib/postgresql/15/bin"),
    )


def test_good_values_parse(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    environ = {
        "FURTHER_ROOT": "rel/store",
        "FURTHER_LEASE_SECS": "0.5",
        "FURTHER_WAIT_TIMEOUT_SECS": "0",
        "FURTHER_MAX_ATTEMPTS": " 7 ",
        "FURTHER_DASK_ADDRESS": "tcp://10.0.0.5:8786",
        "FURTHER_PG_BIN": str(tmp_path),
    }
    assert Settings.from_env(environ) == Settings(
        root=tmp_path / "rel" / "store",
        lease_s=0.5,
        wait_timeout_s=0.0,
        max_attempts=7,
        dask_address="tcp://10.0.0.5:8786",
        pg_bin=tmp_path,
    )
    assert settings.lease_s(environ={"FURTHER_LEASE_SECS": "1e2"}) == 100.0
    assert settings.wait_timeout_s(environ={"FURTHER_WAIT_TIMEOUT_SECS": "12.5"}) == 12.5
    assert settings.store_root(environ={"FURTHER_ROOT": "~/s"}) == Path.home() / "s"


def test_an_empty_value_means_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("FURTHER_LEASE_SECS", "FURTHER_WAIT_TIMEOUT_SECS", "FURTHER_MAX_ATTEMPTS"):
        monkeypatch.setenv(name, "")
    monkeypatch.setenv("FURTHER_DASK_ADDRESS", "")
    assert (settings.lease_s(), settings.wait_timeout_s(), settings.max_attempts()) == (15, 3600, 3)
    assert settings.dask_address() is None


def test_the_environment_is_read_at_call_time(monkeypatch: pytest.MonkeyPatch) -> None:
    assert settings.lease_s() == 15
    monkeypatch.setenv("FURTHER_LEASE_SECS", "9")
    assert settings.lease_s() == 9 and Settings.from_env().lease_s == 9
    monkeypatch.setenv("FURTHER_LEASE_SECS", "inf")
    with pytest.raises(ConfigurationError):
        settings.lease_s()


def test_explicit_arguments_win_and_are_validated_naming_the_argument(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("FURTHER_LEASE_SECS", "9")
    monkeypatch.setenv("FURTHER_MAX_ATTEMPTS", "5")
    store = ArtifactStore(tmp_path, lease_s=2, wait_timeout_s=1, max_attempts=1)
    assert (store.lease_s, store.wait_timeout_s, store.max_attempts) == (2.0, 1.0, 1)
    bad = [
        ({"lease_s": float("inf")}, "lease_s=inf"),
        ({"lease_s": float("nan")}, "lease_s=nan"),
        ({"lease_s": 0.1}, "lease_s=0.1"),
        ({"lease_s": "5"}, "lease_s='5'"),
        ({"wait_timeout_s": float("inf")}, "wait_timeout_s=inf"),
        ({"wait_timeout_s": -1}, "wait_timeout_s=-1"),
        ({"max_attempts": 0}, "max_attempts=0"),
        ({"max_attempts": 2.5}, "max_attempts=2.5"),
        ({"max_attempts": True}, "max_attempts=True"),
    ]
    for kwargs, named in bad:
        with pytest.raises(ConfigurationError) as info:
            ArtifactStore(tmp_path, **kwargs)  # type: ignore[arg-type]
        assert str(info.value).startswith(named), (kwargs, str(info.value))
    with pytest.raises(ConfigurationError, match=r"^lease_s=0\.2 .*>= 0\.5"):
        Lease(tmp_path, lease_s=0.2)


def test_pg_bin_must_not_be_a_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    a_file = tmp_path / "pg"
    a_file.write_text("x")
    monkeypatch.setenv("FURTHER_PG_BIN", str(a_file))
    with pytest.raises(ConfigurationError, match=f"FURTHER_PG_BIN={str(a_file)!r}"):
        settings.pg_bin()
    monkeypatch.setenv("FURTHER_PG_BIN", str(tmp_path / "missing"))
    assert settings.pg_bin() == tmp_path / "missing"  # reported later, with how to install
    from further_dagster.testing.postgres import PG_BIN_DIR

    assert tmp_path / "missing" == PG_BIN_DIR


def test_store_and_testing_modules_read_no_further_variable_themselves() -> None:
    package = Path(settings.__file__).parent
    modules = [*sorted((package / "store").rglob("*.py")), package / "testing" / "postgres.py"]
    readers = [
        f"{path.relative_to(package)}: {line.strip()}"
        for path in modules
        for line in path.read_text().splitlines()
        if ("environ" in line or "getenv" in line) and "FURTHER_" in line
    ]
    assert readers == []


def test_git_dirty_is_a_boolean_setting_on_by_default() -> None:
    assert settings.git_dirty(environ={}) is True
    assert settings.git_dirty(environ={"FURTHER_GIT_DIRTY": "off"}) is False
    with pytest.raises(ConfigurationError, match="FURTHER_GIT_DIRTY='maybe'.*default, 1"):
        settings.git_dirty(environ={"FURTHER_GIT_DIRTY": "maybe"})


def test_fsync_is_a_boolean_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert settings.fsync() is False and Settings.from_env().fsync is False
    for raw, value in (("1", True), ("yes", True), ("ON", True), ("0", False), ("off", False)):
        assert settings.fsync(environ={"FURTHER_FSYNC": raw}) is value
    with pytest.raises(ConfigurationError, match="FURTHER_FSYNC='2'"):
        settings.fsync(environ={"FURTHER_FSYNC": "2"})
    with pytest.raises(ConfigurationError, match="fsync=1"):
        settings.fsync(1)  # type: ignore[arg-type]
    monkeypatch.setenv("FURTHER_FSYNC", "true")
    assert Settings.from_env().fsync is True
