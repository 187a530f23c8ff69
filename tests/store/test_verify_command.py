"""`further-dagster verify`: run as a real process against a real store."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from further_dagster.store import ArtifactStore

from .conftest import KEY, KEY2

pytestmark = pytest.mark.unit

KEY3 = "00000000000000000000000000000003"
CLI = Path(sys.executable).parent / "further-dagster"


def compute(tmp_dir: Path, logger: logging.Logger) -> Mapping[str, Any]:
    return {"array": np.arange(16.0), "doc": {"a": [1, 2]}}


def verify(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FURTHER_")}
    return subprocess.run(
        [str(CLI), "verify", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    store = ArtifactStore(tmp_path / "root")
    for project, cell, key in (("p", "c", KEY), ("p", "c", KEY2), ("q", "d", KEY3)):
        store.ensure(project, cell, key, compute, {})
    return store


def flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))


def test_an_intact_store_exits_0(store: ArtifactStore, tmp_path: Path) -> None:
    done = verify("--root", str(store.root), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"checked 3 result(s) under {store.root}: 0 damaged"


def test_damaged_results_are_listed_and_quarantined(store: ArtifactStore, tmp_path: Path) -> None:
    flip(store.instance_dir("p", "c", KEY2) / "result" / "array.npy")  # same size: digest only
    (store.instance_dir("q", "d", KEY3) / "result" / "doc.json").unlink()
    done = verify("--root", str(store.root), cwd=tmp_path)
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"damaged p.c@{KEY2}: array.npy's blake2b digest")
    assert lines[1].startswith(f"damaged q.d@{KEY3}: doc.json is missing")
    assert "2 damaged (--quarantine moves them aside" in lines[-1]
    assert store.is_stored("p", "c", KEY2)  # listing moves nothing

    only = verify("--root", str(store.root), "--project", "q", cwd=tmp_path)
    assert only.returncode == 1 and "checked 1 result(s)" in only.stdout

    moved = verify("--root", str(store.root), "--cell", "c", "--quarantine", cwd=tmp_path)
    assert moved.returncode == 1
    assert "moved aside to" in moved.stdout and "1 moved aside" in moved.stdout
    assert not store.is_stored("p", "c", KEY2) and store.is_stored("q", "d", KEY3)
    (damaged,) = store.instance_dir("p", "c", KEY2).glob("damaged-*")
    assert (damaged / "result" / "array.npy").exists() and (damaged / "reason.json").exists()

    rest = verify("--root", str(store.root), "--quarantine", cwd=tmp_path)
    assert rest.returncode == 1 and not store.is_stored("q", "d", KEY3)
    again = verify("--root", str(store.root), cwd=tmp_path)
    assert again.returncode == 0 and "checked 1 result(s)" in again.stdout


def test_digests_are_verified_whatever_the_store_setting(
    store: ArtifactStore, tmp_path: Path
) -> None:
    flip(store.instance_dir("p", "c", KEY) / "result" / "array.npy")
    env_size = {**os.environ, "FURTHER_VERIFY": "size", "FURTHER_ROOT": str(store.root)}
    done = subprocess.run(
        [str(CLI), "verify"], cwd=tmp_path, env=env_size, capture_output=True, text=True
    )
    assert done.returncode == 1 and f"damaged p.c@{KEY}" in done.stdout


def test_a_symlinked_instance_is_reported_and_not_moved(
    store: ArtifactStore, tmp_path: Path
) -> None:
    inst = store.instance_dir("q", "d", KEY3)
    target = tmp_path / "outside"
    inst.rename(target)
    inst.symlink_to(target)
    done = verify("--root", str(store.root), "--quarantine", cwd=tmp_path)
    assert done.returncode == 1
    assert f"damaged q.d@{KEY3}: {inst} is a symlink" in done.stdout
    assert "not moved" in done.stdout and (target / "result").is_dir()


def test_bad_names_are_refused(store: ArtifactStore, tmp_path: Path) -> None:
    done = verify("--root", str(store.root), "--project", "../x", cwd=tmp_path)
    assert done.returncode != 0 and "verify:" in done.stderr
