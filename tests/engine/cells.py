"""Cells for engine tests. make() appends a line to $FURTHER_TEST_CALLS so tests count calls
across threads and processes."""

import os
import threading
import time

from further_dagster import VAR, Cell, Opts, Project, ProjectParams, Req, Specs


def record(cell: str, key: str) -> None:
    path = os.environ.get("FURTHER_TEST_CALLS")
    if path:
        with open(path, "a") as fh:
            fh.write(f"{cell} {key} {os.getpid()} {threading.current_thread().name}\n")


class EngineParams(ProjectParams):
    seed: int = 0


engine_demo = Project("engine_demo", params=EngineParams)


class Base(Cell, project=engine_demo):
    class Specs(Specs):
        n: int = 3
        seed: int = 0

    class Opts(Opts):
        verbose: bool = False

    project_params = ("seed",)
    contributions = {"values": list}

    def make(self):
        record("base", self.key)
        delay = float(os.environ.get("FURTHER_TEST_DELAY", "0"))
        if delay:
            time.sleep(delay)
        return {"values": [self.specs.seed + i for i in range(self.specs.n)]}


class Scaled(Cell, project=engine_demo):
    class Specs(Specs):
        factor: float = 2.0

    req_cells = {"base": Req("base")}
    contributions = {"values": list, "total": float}

    def make(self):
        record("scaled", self.key)
        values = [v * self.specs.factor for v in self.inputs["base"].values]
        return {"values": values, "total": float(sum(values))}


class Sweep(Cell, project=engine_demo):
    req_cells = {"bases": Req("base", n=VAR([1, 2, 3]))}
    contributions = {"sizes": list}

    def make(self):
        record("sweep", self.key)
        return {"sizes": [len(b.values) for b in self.inputs["bases"]]}


class Hang(Cell, project=engine_demo):
    """Sleeps in make() until killed (crash tests), unless $FURTHER_TEST_NO_HANG is set."""

    class Specs(Specs):
        tag: str = "a"

    contributions = {"value": str}

    def make(self):
        record("hang", self.key)
        (self.artifact_dir / "partial.txt").write_text("half-written")
        if not os.environ.get("FURTHER_TEST_NO_HANG"):
            time.sleep(3600)
        return {"value": "done"}
