"""Cells for the Ctrl-C tests of test_faults.py: make() says it started, then sleeps for an hour.

`$FAULT_READY_DIR/<tag>` gets the pid of the process running make(), so the test knows when
every instance is inside make() and which processes to look for afterwards.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

from further_dagster import VAR, Cell, Project, Req, Specs

fault_ctrlc = Project("fault_ctrlc")


class Sleepy(Cell, project=fault_ctrlc):
    class Specs(Specs):
        tag: str = "a"

    contributions = {"v": str}

    def make(self) -> dict[str, Any]:
        ready = Path(os.environ["FAULT_READY_DIR"]) / self.specs.tag
        partial = ready.with_name(f".{ready.name}")
        partial.write_text(f"{os.getpid()} {threading.get_ident()}")
        partial.rename(ready)  # appears whole
        time.sleep(3600)
        return {"v": self.specs.tag}


class Both(Cell, project=fault_ctrlc):
    req_cells = {"parts": Req("sleepy", tag=VAR(["a", "b"]))}
    contributions = {"v": list}

    def make(self) -> dict[str, Any]:
        return {"v": [p.v for p in self.inputs["parts"]]}
