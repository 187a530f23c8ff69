"""Run one `ArtifactStore.ensure` in a separate process, for the multi-process tests.

Usage: python _store_worker.py ROOT KEY MODE COUNTER LEASE_S [GO_FILE]

MODE is "ok" (append a line to COUNTER, sleep, return contributions), "crash" (append, write a
partial file, then SIGKILL itself mid-compute) or "hang" (append, then sleep until killed).
Waits for GO_FILE to exist before calling ensure, so that all workers start together. Prints
the Outcome as one JSON line.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from further_dagster.store import ArtifactStore


def main() -> None:
    root, key, mode, counter, lease_s = sys.argv[1:6]
    go = Path(sys.argv[6]) if len(sys.argv) > 6 else None
    store = ArtifactStore(root, lease_s=float(lease_s), poll_s=0.02, wait_timeout_s=60)

    def compute(tmp_dir: Path, logger: logging.Logger) -> dict[str, Any]:
        with open(counter, "a") as fh:
            fh.write(f"{os.getpid()}\n")
        if mode == "crash":
            (tmp_dir / "value.json").write_text('{"half": ')
            os.kill(os.getpid(), signal.SIGKILL)
        if mode == "hang":
            time.sleep(600)
        time.sleep(1.0)  # longer than the lease: only the heartbeat keeps it alive
        return {"value": {"computed_by": os.getpid()}, "n": 7}

    if go is not None:
        Path(f"{go}.ready-{os.getpid()}").touch()
        while not go.exists():
            time.sleep(0.002)
    outcome = store.ensure("proj", "cell", key, compute, {"specs": {"n": 7}})
    loaded = store.load("proj", "cell", key)
    print(json.dumps({"hit": outcome.hit, "waited": outcome.waited, "loaded": loaded}))


if __name__ == "__main__":
    main()
