"""End to end with a real `dagster-daemon`: edit a data file, the shipped release sensor
materializes what the new release reaches; an observation without an edit starts no run."""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import dagster as dg
import pytest

pytestmark = pytest.mark.daemon

TEMPLATE = Path(__file__).resolve().parent / "daemon_location"
BIN = Path(sys.executable).parent
HOME_YAML = """\
telemetry:
  enabled: false
run_queue:
  max_concurrent_runs: 2
"""


def wait_for(what: str, check: Callable[[], object], timeout: float, log: Path) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.5)
    tail = log.read_text()[-4000:] if log.exists() else "(no daemon log)"
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}\n{tail}")


@pytest.fixture
def location(tmp_path: Path) -> Path:
    copy = tmp_path / "location"
    shutil.copytree(TEMPLATE, copy)
    return copy


@pytest.fixture
def env(tmp_path: Path, location: Path) -> dict[str, str]:
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(HOME_YAML)
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("FURTHER_", "DAGSTER_"))}
    return {**clean, "DAGSTER_HOME": str(home), "FURTHER_ROOT": str(tmp_path / "store")}


@contextlib.contextmanager
def running_daemon(location: Path, env: dict[str, str], log: Path) -> Iterator[None]:
    """`dagster-daemon run` on the location, in its own process group, stopped on exit."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"],
            cwd=location,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


class SensorObservations:
    """The sensor's observations of the readings file, as they happen: the history gains a line
    only when the release changes, and the last-seen record beside it (rewritten on every
    observation) says when it was last observed, so each tick shows as the last-seen timestamp
    advancing. Polled more often than the sensor ticks, it misses none."""

    def __init__(self, store: Path) -> None:
        self.store = store
        self.seen: set[tuple[str, str]] = set()

    def lines(self) -> list[dict]:
        found = []
        for path in self.store.glob(".releases/daemon_demo/readings/*.jsonl"):
            found.extend(json.loads(line) for line in path.read_text().splitlines())
        return found

    def __call__(self) -> int:
        records = [r for r in self.lines() if r["source"] == "sensor"]
        for path in self.store.glob(".releases/daemon_demo/readings/*.last.json"):
            with contextlib.suppress(FileNotFoundError, ValueError):
                records.append(json.loads(path.read_text())["observation"])
        for record in records:
            if record["source"] == "sensor":
                self.seen.add((record["release"], record["observed_at"]))
        return len(self.seen)


def stored(store: Path, cell: str) -> set[str]:
    return {p.parent.name for p in store.glob(f"daemon_demo/{cell}/*/result")}


def test_editing_the_data_file_rematerializes_only_what_the_release_reaches(
    location, env, tmp_path
):
    store = Path(env["FURTHER_ROOT"])
    # the results of the current file are stored (a notebook computed them)
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import runpy; from further_dagster import Session; "
            "runpy.run_path('location.py'); Session(progress=False).call('daemon_demo.report')",
        ],
        cwd=location,
        env=env,
        check=True,
        timeout=120,
    )
    before = {cell: stored(store, cell) for cell in ("readings", "stats", "static", "report")}
    assert all(len(keys) == 1 for keys in before.values())

    log = tmp_path / "daemon.log"
    # create the instance's SQLite storage before the daemon and its code server race to do it
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        assert instance.get_runs() == []
    with (
        running_daemon(location, env, log),
        dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance,
    ):
        # two sensor ticks: the first saw the release for the first time, all of it stored
        observations = SensorObservations(store)
        wait_for("two sensor ticks", lambda: observations() >= 2, 120, log)
        assert instance.get_runs() == []
        # re-observing the same release appends nothing: the notebook's line is the only one
        assert [r["source"] for r in observations.lines()] == ["session"]

        (location / "data" / "readings.txt").write_text("1\n2\n3\n4\n")

        def finished_run():
            runs = instance.get_runs()
            done = [r for r in runs if r.status == dg.DagsterRunStatus.SUCCESS]
            failed = [r for r in runs if r.status == dg.DagsterRunStatus.FAILURE]
            assert not failed, f"run failed: {failed[0].run_id}"
            return done

        (run,) = wait_for("the downstream run", finished_run, 180, log)
        assert run.tags["further/trigger"] == "further_release_sensor"
        assert sorted(k.to_user_string() for k in run.asset_selection) == [
            "daemon_demo/report",
            "daemon_demo/stats",
        ]
        materialized = instance.get_latest_materialization_event(
            dg.AssetKey(["daemon_demo", "stats"])
        )
        meta = materialized.asset_materialization.metadata
        assert meta["further/cache"].value == "miss"
        (new_release,) = meta["further/releases"].value.values()
        after = {cell: stored(store, cell) for cell in ("readings", "stats", "static", "report")}
        # the new release reached readings, stats and report; static was not recomputed
        assert after["static"] == before["static"]
        for cell in ("readings", "stats", "report"):
            assert len(after[cell]) == 2 and before[cell] < after[cell]
        observation = instance.fetch_observations(dg.AssetKey(["daemon_demo", "readings"]), limit=1)
        assert observation.records[0].asset_observation.tags["dagster/data_version"] == new_release

        # further observations without an edit start no run, and add no history line
        seen, lines = observations(), len(observations.lines())
        wait_for("two more sensor ticks", lambda: observations() >= seen + 2, 60, log)
        assert len(instance.get_runs()) == 1
        assert len(observations.lines()) == lines
        releases = [r["release"] for r in observations.lines()]
        assert releases[-1] == new_release and len(set(releases)) == 2
