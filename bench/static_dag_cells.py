"""Cells of bench/bench_static_dag.py: DEPTH cells chained (`link_0 <- link_1 <- ...`), each
swept with the chain's project param, so WIDTH chains of DEPTH trivial instances: 10 x 100 =
1,000 instances, the shape where a round trip per dependency level costs most.
$FURTHER_BENCH_DEPTH / $FURTHER_BENCH_WIDTH change it."""

from __future__ import annotations

import os
from typing import Any

from further_dagster import VAR, Cell, Project, ProjectParams, Req, Specs

DEPTH = int(os.environ.get("FURTHER_BENCH_DEPTH", "100"))
WIDTH = int(os.environ.get("FURTHER_BENCH_WIDTH", "10"))
SWEEP = {"chain": VAR(list(range(WIDTH)))}


class ChainParams(ProjectParams):
    chain: int = 0


bench_static = Project("bench_static", params=ChainParams)


class ChainSpecs(Specs):
    chain: int = 0


def _make(self: Cell) -> dict[str, Any]:
    prev = self.inputs.get("prev")
    return {"v": 0 if prev is None else prev.v + 1}


for _n in range(DEPTH):
    _name = f"Link{_n}"
    _cls = type(
        _name,
        (Cell,),
        {
            "__module__": __name__,
            "__qualname__": _name,
            "Specs": ChainSpecs,
            "project_params": ("chain",),
            "req_cells": {"prev": Req(f"link{_n - 1}")} if _n else {},
            "contributions": {"v": int},
            "make": _make,
        },
        project=bench_static,
    )
    globals()[_name] = _cls

LAST = globals()[f"Link{DEPTH - 1}"]
