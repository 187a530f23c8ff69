"""Generated projects of trivial cells for benchmarks and CLI tests.

`chain(n)` builds a project `chain_<n>` where cell i requires cell i-1; the module attribute
`defs` is a 100-cell chain (or $FURTHER_BENCH_CHAIN cells) for `dagster asset materialize -m`.
"""

from __future__ import annotations

import os

from further_dagster import Cell, Project, Req, Specs, build_definitions


def chain(n: int, name: str | None = None) -> Project:
    project = Project(name or f"chain_{n}", description=f"a chain of {n} trivial cells")
    previous: str | None = None
    for i in range(n):
        attrs = {
            "__module__": __name__,
            "__doc__": f"Trivial cell {i} of {n}.",
            "Specs": type("Specs", (Specs,), {"__annotations__": {"i": int}, "i": i}),
            "contributions": {"value": int},
            "req_cells": {"prev": Req(previous)} if previous else {},
            "make": _make,
        }
        type(f"Cell{i}", (Cell,), attrs, project=project, name=f"c{i:04d}")
        previous = f"c{i:04d}"
    return project


def _make(self):  # type: ignore[no-untyped-def]
    prev = self.inputs["prev"].value if "prev" in self.inputs else 0
    return {"value": prev + self.specs.i}


N = int(os.environ.get("FURTHER_BENCH_CHAIN", "100"))
project = chain(N)
defs = build_definitions(project)
