"""pytest plugin (registered automatically through the `pytest11` entry point).

Fixtures:
    further_tmp_root: a fresh store root for the test, set as FURTHER_ROOT, so every Session,
        ArtifactStore and Dagster step in the test reads and writes there and nothing leaks
        between tests.
    further_session: a Session on that root (INLINE mode, no console progress).
    further_registry: the project registry, put back as it was when the test ends: projects
        and cells the test defines vanish, so tests may reuse project names (as redun's
        `redun_globals` does for its registries).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from further_dagster.core.project import Registry


@pytest.fixture
def further_tmp_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A per-test store root, exported as FURTHER_ROOT."""
    root = tmp_path / "further-store"
    root.mkdir()
    monkeypatch.setenv("FURTHER_ROOT", str(root))
    yield root


@pytest.fixture
def further_session(further_tmp_root: Path):  # type: ignore[no-untyped-def]
    """A Session over `further_tmp_root`."""
    from further_dagster import Session

    return Session(root=further_tmp_root, progress=False)


@pytest.fixture
def further_registry() -> Iterator[Registry]:
    """The project registry, restored after the test to the projects and cells it had before.

    Modules a test imports register their projects only then, and lose them on restore while
    staying imported: import such modules at the top of the test file.
    """
    from further_dagster.core.project import REGISTRY

    with REGISTRY.isolated() as registry:
        yield registry
