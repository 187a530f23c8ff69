"""A code location for the Slurm tests: cells on the three partitions, a sweep, a failing cell.

    prep (debug) -> train (gpu, 1 fake GPU, swept over lr) -> summary (inline, no Slurm job)
    urgent (high)            slow (debug; sleeps $FURTHER_TEST_SLOW_S)      broken (raises)
    side (debug, independent: shares an array with prep when run with it)
    overtime (1 min limit)   huge (64 CPUs: refused)    huge_or_small (64 CPUs, fallback 1)
    flaky (swept k = 1, 2; k = 2 raises) -> flaky_sweep      nap (like slow, swept) -> nap_sweep

make() appends one line per call to $FURTHER_TEST_CALLS: cell, key, Slurm job id, partition,
the GPUs Slurm gave it, and the restart count (a requeued job runs make() again).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import dagster as dg

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
        "array_job": os.environ.get("SLURM_ARRAY_JOB_ID"),
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


class Side(Cell, project=slurm_demo):
    """Independent of prep, with the same spec: a run of both submits them as one array."""

    slurm = SlurmSpec(partition="debug")
    contributions = {"value": int}

    def make(self):
        record("side", self.key)
        return {"value": 2}


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


class Flaky(Cell, project=slurm_demo):
    """Fails for k=2 only; swept by `flaky_sweep`, so its step fans out as one job array."""

    class Specs(Specs):
        k: int = 1

    slurm = SlurmSpec(partition="debug")
    contributions = {"value": int}

    def make(self):
        record("flaky", self.key)
        if self.specs.k == 2:
            raise ValueError(f"flaky cell refuses k={self.specs.k}")
        return {"value": self.specs.k}


class FlakySweep(Cell, project=slurm_demo):
    """Sweeps flaky over k = 1, 2."""

    req_cells = {"flakies": Req("flaky", k=VAR([1, 2]))}
    contributions = {"values": list}

    def make(self):
        return {"values": [f.value for f in self.inputs["flakies"]]}


class Nap(Cell, project=slurm_demo):
    """Like `slow`, swept by `nap_sweep`: its step fans out as one job array."""

    class Specs(Specs):
        tag: str = "a"

    slurm = SlurmSpec(partition="debug", time_min=15)
    contributions = {"value": str}

    def make(self):
        record("nap", self.key)
        started = os.environ.get("FURTHER_TEST_STARTED")
        if started:
            Path(started).touch()
        time.sleep(float(os.environ.get("FURTHER_TEST_SLOW_S", "0")))
        return {"value": self.specs.tag}


class NapSweep(Cell, project=slurm_demo):
    """Sweeps nap over two tags."""

    in_parallel = False
    req_cells = {"naps": Req("nap", tag=VAR(["a", "b"]))}
    contributions = {"values": list}

    def make(self):
        return {"values": [n.value for n in self.inputs["naps"]]}


class Overtime(Cell, project=slurm_demo):
    """Asks for one minute and needs more: submitit's time-limit signal comes within seconds."""

    slurm = SlurmSpec(partition="debug", time_min=1)
    contributions = {"value": int}

    def make(self):
        record("overtime", self.key)
        time.sleep(300)
        return {"value": 1}


class Huge(Cell, project=slurm_demo):
    """More CPUs than any partition has: sbatch refuses it at submit."""

    slurm = SlurmSpec(cpus=64)
    contributions = {"value": int}

    def make(self):
        return {"value": 1}


class HugeOrSmall(Cell, project=slurm_demo):
    """The same request with a fallback sbatch accepts."""

    slurm = [SlurmSpec(cpus=64), SlurmSpec(cpus=1)]
    contributions = {"value": int}

    def make(self):
        record("huge_or_small", self.key)
        return {"value": 1}


defs = build_definitions(
    slurm_demo,
    mode="SLURM",
    jobs=[
        dg.define_asset_job("quick", selection=["slurm_demo/prep", "slurm_demo/urgent"]),
        dg.define_asset_job("slow_job", selection=["slurm_demo/slow"]),
        dg.define_asset_job("nap_job", selection=["slurm_demo/nap"]),
    ],
)
