"""Fixtures for the store tests: a fresh root per test and an environment without FURTHER_*."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from further_dagster.store import ArtifactStore, codecs

KEY = "0123456789abcdef0123456789abcdef"
KEY2 = "fedcba9876543210fedcba9876543210"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Store defaults come from the environment: tests start from none of it."""
    for name in list(os.environ):
        if name.startswith("FURTHER_") or name == "SLURM_JOB_ID":
            monkeypatch.delenv(name)


@pytest.fixture(autouse=True)
def _restore_codecs() -> Iterator[None]:
    """Tests that register codecs must not leak them into other tests."""
    saved = codecs._codecs
    yield
    codecs._codecs = saved


@pytest.fixture
def store_root(tmp_path: Path) -> Path:
    return tmp_path / "root"


@pytest.fixture
def make_store(store_root: Path) -> Callable[..., ArtifactStore]:
    """ArtifactStore factory on this test's root; keyword arguments pass through.

    The one place that builds stores, so a second implementation (another backend) can be added
    here as a parametrization and every contract test runs against it.
    """

    def make(**kwargs: Any) -> ArtifactStore:
        kwargs.setdefault("poll_s", 0.02)
        return ArtifactStore(store_root, **kwargs)

    return make


@pytest.fixture
def store(make_store: Callable[..., ArtifactStore]) -> ArtifactStore:
    return make_store()
