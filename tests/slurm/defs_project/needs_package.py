"""A cell module that needs its package itself (the code location): a task must import it."""

from __future__ import annotations

import sys
from typing import Any

from further_dagster import Cell
from tests.slurm.defs_project import defs  # noqa: F401  (what makes the package necessary)
from tests.slurm.defs_project.cells import slurm_chain


class NeedsPackage(Cell, project=slurm_chain):
    contributions = {"dagster": bool}

    def make(self) -> dict[str, Any]:
        return {"dagster": "dagster" in sys.modules}
