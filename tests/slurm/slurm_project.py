"""A code location for the Slurm tests: cells on the three partitions, a sweep, a failing cell.

    prep (debug) -> train (gpu, 1 fake GPU, swept over lr) -> summary (inline, no Slurm job)
    urgent (high)            slow (debug; sleeps $FURTHER_TEST_SLOW_S)      broken (raises)

make() appends one line per call to $FURTHER_TEST_CALLS: cell, key, Slurm job id, partition,
the GPUs Slurm gave it, and the restart count (a requeued job runs make() again).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from further_dagster import VAR, Cell, Project, Req, Specs, build_definitions
from further_dagster.slurm import SlurmSpec

slurm_demo = Project("slurm_demo", description="cells on three Slurm partitions")

LRS = [0.1, 0.2, 0.3]


def record(cell: str, key: str) -> None:
    path = os.environ.get("FURTHER_TEST_CALLS")
    if not path:
        return
    row = {
        "cell": cell,
        "key": key,
        "job": os.environ.get("SLURM_JOB_ID"),
        "array_task": os.environ.get("SLURM_ARRAY_TASK_ID"),
        "partition": os.environ.get("SLURM_JOB_PARTITION"),
        "gpus": os.environ.get("CUDA_VISIBLE_DEVICES") or os.environ.get("SLURM_JOB_GPUS"),
        "restarts": os.environ.get("SLURM_RESTART_COUNT", "0"),
        "pid": os.getpid(),
    }
    with open(path, "a") as fh:
        fh.write(json.dumps(row) + "\n")


class Prep(Cell, project=slurm_demo):
    """Numbers to train on (debug partition)."""

    class Specs(Specs):
        n: int = 5

    slurm = SlurmSpec(partition="debug")
    contributions = {"values": list}

    def make(self):
        record("prep", self.key)
        return {"values": list(range(self.specs.n))}


class Train(Cell, project=slurm_demo):
    """Scale by lr on a (fake) GPU."""

    class Specs(Specs):
        lr: float = 0.1

    slurm = SlurmSpec(partition="gpu", gpus=1)
    req_cells = {"prep": Req("prep")}
    contributions = {"total": float}

    def make(self):
        record("train", self.key)
        return {"total": self.specs.lr * sum(self.inputs["prep"].values)}


class Summary(Cell, project=slurm_demo):
    """Collect the sweep; too small for a Slurm job."""

    in_parallel = False
    req_cells = {"trains": Req("train", lr=VAR(LRS))}
    contributions = {"totals": list}

    def make(self):
        record("summary", self.key)
        return {"totals": [t.total for t in self.inputs["trains"]]}


class Urgent(Cell, project=slurm_demo):
    """Runs on the high-priority partition."""

    slurm = SlurmSpec(partition="high")
    contributions = {"value": int}

    def make(self):
        record("urgent", self.key)
        return {"value": 1}


class Slow(Cell, project=slurm_demo):
    """Sleeps $FURTHER_TEST_SLOW_S seconds after touching $FURTHER_TEST_STARTED (preemption,
    cancellation)."""

    class Specs(Specs):
        tag: str = "a"

    slurm = SlurmSpec(partition="debug", time_min=15)
    contributions = {"value": str}

    def make(self):
        record("slow", self.key)
        started = os.environ.get("FURTHER_TEST_STARTED")
        if started:
            Path(started).touch()
        time.sleep(float(os.environ.get("FURTHER_TEST_SLOW_S", "0")))
        return {"value": self.specs.tag}


class Broken(Cell, project=slurm_demo):
    """make() raises, to check the remote traceback reaches the event log."""

    class Specs(Specs):
        k: int = 0

    slurm = SlurmSpec(partition="debug")
    contributions = {"value": int}

    def make(self):
        record("broken", self.key)
        raise ValueError(f"broken cell refuses k={self.specs.k}")


defs = build_definitions(slurm_demo, mode="SLURM")
