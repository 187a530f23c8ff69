"""The real single-node Slurm cluster for `slurm`-marked tests (scripts/slurm-cluster).

`slurm_cluster` (session) starts it once and stops it when the session ends, unless it was
already running before (then it is left as found). Where its files live is the script's choice
(`scripts/slurm-cluster env` says), so that start, stop and the tests agree. `slurm_folder`
gives each test a fresh submitit folder: a restarted cluster reuses job ids, and old result files
would be read back.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "slurm-cluster"


def _cluster(command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), command], env=env, cwd=REPO, capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[dict[str, str]]:
    """Start the cluster (idempotent); yield the variables exported for it (SLURM_CONF, ...)."""
    # FURTHER_SLURM_DIR if set; else the script's default for cwd=REPO: REPO/.slurm, or a
    # per-user directory under /tmp when user munge cannot reach REPO (a clone in a 0700 home).
    env = dict(os.environ)
    was_running = _cluster("status", env).returncode == 0
    started = time.monotonic()
    done = _cluster("start", env)
    if done.returncode != 0:
        pytest.fail(
            f"scripts/slurm-cluster start failed (exit {done.returncode}):\n"
            f"{done.stdout}{done.stderr}",
            pytrace=False,
        )
    print(f"\nslurm cluster ready in {time.monotonic() - started:.1f}s\n{done.stdout}")
    exported: dict[str, str] = {}
    for line in _cluster("env", env).stdout.splitlines():
        words = shlex.split(line)
        if len(words) == 2 and words[0] == "export" and "=" in words[1]:
            name, _, value = words[1].partition("=")
            exported[name] = value
    assert "SLURM_CONF" in exported, "scripts/slurm-cluster env printed no SLURM_CONF"
    saved: dict[str, str | None] = {name: os.environ.get(name) for name in exported}
    os.environ.update(exported)
    try:
        yield exported
    finally:
        for name, old in saved.items():
            if old is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = old
        if not was_running:
            stopped = _cluster("stop", env)
            if stopped.returncode != 0:
                print(f"scripts/slurm-cluster stop failed:\n{stopped.stdout}{stopped.stderr}")


@pytest.fixture
def slurm_folder(slurm_cluster: dict[str, str], tmp_path: Path) -> Path:
    """A fresh submitit folder for this test, on the running cluster."""
    folder = tmp_path / "submitit"
    folder.mkdir()
    return folder
