"""The fault suite: real processes and real files, killed, stopped, interrupted, starved.

* kill -9 at random (seeded) points of the whole attempt, in forked processes: nothing lost,
  no partial result loaded, no torn state, and no make() once a key is stored;
* a holder stopped past its lease (SIGSTOP) and resumed after a takeover: the taker's success
  stays, and the resumed holder returns the taker's result;
* takeover: at once after kill -9 of a holder on this machine, after the lease for a lock from
  another host (or another pid namespace), at once after SIGTERM (which still kills);
* attempts: interrupted and environment attempts do not count, a ContributionError reaches the
  caller as itself and is refused until retried, `retry_failed=True` and `further-dagster retry`;
* disk full (a 1 MB tmpfs) and a read-only root (chmod 0555, a read-only mount): `StoreError`s
  naming cell, key, path and fix, and no lock left behind;
* Ctrl-C of a LOCAL / LOCAL_PROCESSES Session returns at once, attempts recorded interrupted.

The figures (takeover times, Ctrl-C return time) are printed with `-s`; bench/bench_takeover.py
measures them with the default settings.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import further_dagster
from further_dagster import Cell, Project, Req, Session
from further_dagster.cli import main as cli_main
from further_dagster.engine import compute as engine_compute
from further_dagster.errors import (
    CellComputeError,
    ConfigurationError,
    ContributionError,
    CorruptArtifactError,
    InputLoadError,
    StoreError,
)
from further_dagster.store import ArtifactStore, liveness
from further_dagster.store import attempt as attempt_module
from further_dagster.store.provenance import hostname
from further_dagster.store.records import LeaseRecord, utcnow

from .conftest import KEY, KEY2

pytestmark = pytest.mark.unit

WORKER = Path(__file__).with_name("_fault_worker.py")
REPO = Path(further_dagster.__file__).resolve().parents[1]
P, C = "faults", "cell"


def _env(**extra: str) -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, **extra}


def hold(
    root: Path, lease_s: float, ready: Path, seconds: float, tag: str = ""
) -> subprocess.Popen[str]:
    args = [sys.executable, str(WORKER), "hold", str(root), KEY, str(lease_s), str(ready)]
    return subprocess.Popen(
        [*args, str(seconds), tag],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


class TimedWaiter:
    """`ensure` in a thread of this process; records when its compute started."""

    def __init__(self, store: ArtifactStore, key: str = KEY) -> None:
        self.started_at: float | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(store, key))

    def _run(self, store: ArtifactStore, key: str) -> None:
        def compute(tmp_dir: Path, logger: logging.Logger) -> Mapping[str, Any]:
            self.started_at = time.monotonic()
            return {"by": "waiter"}

        try:
            store.ensure(P, C, key, compute, {})
        except BaseException as exc:  # noqa: BLE001 - asserted by the test
            self.error = exc

    def start(self) -> TimedWaiter:
        self.thread.start()
        return self

    def join(self) -> float:
        self.thread.join(60)
        assert self.error is None, self.error
        assert self.started_at is not None
        return self.started_at


# --- kill -9 anywhere ----------------------------------------------------------------------


def test_kill_9_at_random_points_loses_nothing_and_makes_each_key_once(tmp_path: Path) -> None:
    root, out = tmp_path / "root", tmp_path / "summary.json"
    proc = subprocess.run(
        [sys.executable, str(WORKER), "killloop", str(root), "20261201", "400", str(out)],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(out.read_text())
    kills = 0
    store = ArtifactStore(root)
    for key, record in summary["keys"].items():
        exits = [e for trial in record["trials"] for e in trial["exits"]]
        kills += exits.count(f"signal {signal.SIGKILL}")
        assert "error" not in exits, (key, record)
        assert set(record["checks"]) <= {"missing", "stored"}, (key, record["checks"])
        assert record["checks"][-1] == "stored"
        assert record["final"] == ["hit", "hit"]  # once stored, nobody computes it again
        assert record["starts_after_final"] == 0
        state = store.read_state(P, C, key)
        assert state is not None and state.failures == 0  # kills never use up a try
        if state.status != "success":  # killed between the commit rename and the state write
            assert state.status == "running"
            assert not liveness.process_stat(state.pid) or state.pid == os.getpid()
    where = summary["killed_at"]
    phases = {
        "make": sum("makes.log" in w or "/extra" in w for w in where),
        "commit": sum(any(f in w for f in COMMIT_FILES) for w in where),
        "state": sum(".state.json.tmp-" in w for w in where),
        "lease": sum(w.endswith(("/lock", "/lock.guard")) or ".lock.tmp-" in w for w in where),
    }
    print(f"\nkill -9 loop: {kills} kills ({phases}), {summary['ops']} file ops per attempt")
    assert kills >= 40 and len(where) == kills
    assert all(n >= 1 for n in phases.values()), phases


COMMIT_FILES = (
    "arr.npy",
    "meta.json",
    "text.json",
    "manifest.json",
    "provenance.json",
    "result.tmp-",
)


# --- a holder stalled past its lease --------------------------------------------------------


def test_a_holder_stopped_past_its_lease_never_overwrites_the_takers_success(
    tmp_path: Path,
) -> None:
    root = tmp_path / "root"
    # lease 3 s: the taker's interpreter start (numpy, SQLAlchemy: over 1 s on a loaded
    # machine) must not outlast it, or the taker finds it expired and never waits
    stalled = hold(root, 3.0, tmp_path / "ready-a", 1.0, "A")
    try:
        wait_for(lambda: (tmp_path / "ready-a").exists())
        os.kill(stalled.pid, signal.SIGSTOP)  # a suspended laptop, a C call holding the GIL
        t0 = time.monotonic()
        taker = hold(root, 1.0, tmp_path / "ready-b", 0.1, "B")
        out, err = taker.communicate(timeout=60)
        waited = time.monotonic() - t0
        assert taker.returncode == 0, err
        assert json.loads(out) == {"hit": False, "waited": True, "loaded": {"by": "B"}}
        store = ArtifactStore(root)
        state = store.read_state(P, C, KEY)
        assert state is not None and (state.status, state.pid) == ("success", taker.pid)
        assert waited >= 0.8  # a stopped holder is alive: its lease had to expire first
    finally:
        os.kill(stalled.pid, signal.SIGCONT)
    out, err = stalled.communicate(timeout=60)
    assert stalled.returncode == 0, err
    assert json.loads(out)["loaded"] == {"by": "B"} and json.loads(out)["hit"] is True
    assert "lost its lease" in err
    state = store.read_state(P, C, KEY)
    assert state is not None and (state.status, state.pid) == ("success", taker.pid)
    assert store.load(P, C, KEY) == {"by": "B"}
    inst = store.instance_dir(P, C, KEY)
    assert not (inst / "lock").exists() and not list(inst.glob("result.tmp-*"))


def test_temporaries_of_a_live_holder_are_kept(store: ArtifactStore) -> None:
    inst = store.instance_dir(P, C, KEY)
    live, stale = inst / f"result.tmp-{'a' * 32}", inst / f"result.tmp-{'b' * 32}"
    for path in (live, stale):
        (path / "sub").mkdir(parents=True)
        (path / "sub" / "half.npy").write_bytes(b"x")
    past = time.time() - store.lease_s - 5
    os.utime(stale, (past, past))
    store.ensure(P, C, KEY, lambda d, lg: {"v": 1}, {})
    assert live.exists()  # its heartbeat is recent: a stalled holder may resume into it
    assert not stale.exists()


# --- takeover ----------------------------------------------------------------------------------


def test_a_killed_holder_on_this_machine_is_taken_over_at_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "root"
    holder = hold(root, 15.0, tmp_path / "ready", 3600)  # the default lease
    try:
        wait_for(lambda: (tmp_path / "ready").exists())
        waiter = TimedWaiter(ArtifactStore(root, lease_s=15, wait_timeout_s=60)).start()
        time.sleep(0.3)  # the waiter is polling the live lease
        with caplog.at_level(logging.WARNING, logger="further.store.lease"):
            t0 = time.monotonic()
            holder.kill()  # not reaped yet: a zombie is dead too
            takeover = waiter.join() - t0
    finally:
        holder.kill()
        holder.communicate(timeout=60)
    print(f"\ntakeover after kill -9, same host: {takeover * 1000:.0f} ms (lease 15 s)")
    assert takeover < 3.0  # the poll interval, not the 15 s lease
    assert f"pid {holder.pid}" in caplog.text and "that process is gone" in caplog.text
    assert ArtifactStore(root).load(P, C, KEY) == {"by": "waiter"}


def _foreign_lock(inst: Path, **fields: Any) -> None:
    inst.mkdir(parents=True, exist_ok=True)
    record = LeaseRecord(token="f" * 32, acquired_at=utcnow(), **fields)
    (inst / "lock").write_text(record.model_dump_json())


def test_a_remote_looking_lock_is_taken_over_after_its_lease(store: ArtifactStore) -> None:
    inst = store.instance_dir(P, C, KEY)
    # pid is this live process: another host's pid says nothing here, only the heartbeat does
    _foreign_lock(inst, pid=os.getpid(), host="elsewhere.example", lease_s=1.0)
    t0 = time.monotonic()
    waited = TimedWaiter(store).start().join() - t0
    print(f"\ntakeover of a remote-looking lock: {waited:.2f} s (lease 1 s)")
    assert 0.9 <= waited < 4.0


def test_a_lock_of_another_pid_namespace_waits_for_its_lease(store: ArtifactStore) -> None:
    if liveness.machine() is None:
        pytest.skip("no /proc here: pid namespaces cannot be told apart")
    inst = store.instance_dir(P, C, KEY)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        text=True,
        capture_output=True,
        check=True,
    )
    pid = int(dead.stdout)  # a pid that is gone here, but the lock says "another container"
    _foreign_lock(inst, pid=pid, host=hostname(), lease_s=1.0, machine="other-boot/pid:[1]")
    t0 = time.monotonic()
    assert TimedWaiter(store).start().join() - t0 >= 0.9


def test_sigterm_releases_the_lease_and_still_kills(tmp_path: Path) -> None:
    root = tmp_path / "root"
    store = ArtifactStore(root, lease_s=15, wait_timeout_s=60)
    holder = hold(root, 15.0, tmp_path / "ready", 3600)
    wait_for(lambda: (tmp_path / "ready").exists())
    holder.send_signal(signal.SIGTERM)
    holder.communicate(timeout=30)
    assert holder.returncode == -signal.SIGTERM  # died of it, as without the handler
    inst = store.instance_dir(P, C, KEY)
    assert not (inst / "lock").exists()
    state = store.read_state(P, C, KEY)
    assert state is not None and state.status == "interrupted" and state.failures == 0
    assert state.error is not None and "SIGTERM" in state.error.message
    assert "time.sleep" in state.error.traceback  # where make() was

    (tmp_path / "ready").unlink()
    holder = hold(root, 15.0, tmp_path / "ready", 3600)
    try:
        wait_for(lambda: (tmp_path / "ready").exists())
        waiter = TimedWaiter(store).start()
        time.sleep(0.3)
        t0 = time.monotonic()
        holder.send_signal(signal.SIGTERM)
        takeover = waiter.join() - t0
    finally:
        holder.kill()
        holder.communicate(timeout=30)
    print(f"\ntakeover after SIGTERM: {takeover * 1000:.0f} ms (lease 15 s)")
    assert takeover < 3.0


# --- attempts that do not count, refusals and retries ----------------------------------------


def test_interrupted_and_environment_attempts_do_not_count(
    make_store: Callable[..., ArtifactStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = make_store(max_attempts=1)

    def raising(exc: BaseException) -> Callable[[Path, logging.Logger], Mapping[str, Any]]:
        def compute(tmp_dir: Path, logger: logging.Logger) -> Mapping[str, Any]:
            raise exc

        return compute

    def status() -> tuple[str, int, int]:
        state = store.read_state(P, C, KEY)
        assert state is not None
        return state.status, state.attempts, state.failures

    with pytest.raises(KeyboardInterrupt):
        store.ensure(P, C, KEY, raising(KeyboardInterrupt()), {})
    assert status() == ("interrupted", 1, 0)
    with pytest.raises(SystemExit):
        store.ensure(P, C, KEY, raising(SystemExit(3)), {})
    assert status() == ("interrupted", 2, 0)
    with pytest.raises(InputLoadError):
        store.ensure(P, C, KEY, raising(InputLoadError("input 'x' is damaged")), {})
    assert status() == ("environment", 3, 0)

    def full(name: str, value: Any, tmp: Path) -> Any:
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp / f"{name}.json"))

    monkeypatch.setattr(attempt_module, "encode_value", full)
    with pytest.raises(StoreError, match="no space left") as info:
        store.ensure(P, C, KEY, lambda d, lg: {"v": 1}, {})
    assert f"{P}.{C}@{KEY[:8]}" in str(info.value) and KEY in str(info.value)
    assert "v.json" in str(info.value) and "free space" in str(info.value)
    assert status() == ("environment", 4, 0)
    monkeypatch.undo()

    with pytest.raises(CellComputeError, match="it will not be retried"):
        store.ensure(P, C, KEY, raising(ValueError("a real bug")), {})
    assert status() == ("failed", 5, 1)
    compute_calls: list[int] = []

    def fixed(tmp_dir: Path, logger: logging.Logger) -> Mapping[str, Any]:
        compute_calls.append(1)
        return {"v": 2}

    with pytest.raises(CellComputeError, match="reaching max_attempts=1") as refused:
        store.ensure(P, C, KEY, fixed, {})
    message = str(refused.value)
    assert "retry_failed=True" in message
    assert f"further-dagster retry --root {store.root} {P}.{C} {KEY}" in message
    assert "delete" not in message and compute_calls == []

    reset = store.reset_failures(P, C, KEY)
    assert reset is not None and reset.failures == 0 and reset.reset_at is not None
    assert "retry: 1 failure(s)" in (store.instance_dir(P, C, KEY) / "cell.log").read_text()
    assert store.ensure(P, C, KEY, fixed, {}).attempts == 6 and compute_calls == [1]
    assert store.reset_failures(P, C, KEY) is None  # stored: nothing to retry


def test_a_damaged_input_is_an_environment_attempt(
    further_tmp_root: Path, further_registry: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = Project("faults_input")
    made: list[str] = []

    class Base(Cell, project=project):
        contributions = {"v": int}

        def make(self) -> dict[str, Any]:
            made.append("base")
            return {"v": 1}

    class Top(Cell, project=project):
        req_cells = {"base": Req("base")}
        contributions = {"v": int}

        def make(self) -> dict[str, Any]:
            made.append("top")
            return {"v": self.inputs["base"].v + 1}

    store = ArtifactStore(further_tmp_root, max_attempts=1)
    session = Session(store=store, progress=False)
    session.call("faults_input.base")

    def damaged(self: Any, store: Any, inst: Any, **kwargs: Any) -> Any:
        raise CorruptArtifactError(f"{inst.label}: v.json has another digest than recorded")

    monkeypatch.setattr(engine_compute.ContributionCache, "get", damaged)
    top = session.plan("faults_input.top").roots[0]
    for _ in range(2):  # max_attempts=1, yet never refused: it is not the cell's fault
        with pytest.raises(InputLoadError, match="its input 'base'") as info:
            session.call("faults_input.top")
        assert isinstance(info.value.__cause__, CorruptArtifactError)
        state = store.read_state("faults_input", "top", top.key)
        assert state is not None and (state.status, state.failures) == ("environment", 0)
    monkeypatch.undo()
    assert session.call("faults_input.top").v == 2 and made == ["base", "top"]


def test_a_contribution_error_reaches_the_caller_and_is_not_retried(
    further_tmp_root: Path, further_registry: Any
) -> None:
    project = Project("faults_contrib")
    made: list[int] = []

    class Wrong(Cell, project=project):
        contributions = {"a": int}

        def make(self) -> dict[str, Any]:
            made.append(1)
            return {"a": "one"}

    session = Session(root=further_tmp_root, progress=False)
    with pytest.raises(ContributionError, match="declared as int") as first:
        session.call("faults_contrib.wrong")
    notes = "\n".join(getattr(first.value, "__notes__", []))
    assert "retry_failed=True" in notes and "further-dagster retry" in notes
    key = session.plan("faults_contrib.wrong").roots[0].key
    state = session.store.read_state("faults_contrib", "wrong", key)
    assert state is not None and state.status == "failed" and state.error is not None
    assert state.error.retryable is False
    with pytest.raises(ContributionError, match="is refused") as refused:
        session.call("faults_contrib.wrong")  # deterministic: not run again (max_attempts=3)
    assert "retry_failed=True" in str(refused.value) and made == [1]
    with pytest.raises(ContributionError, match="declared as int"):
        session.call("faults_contrib.wrong", retry_failed=True)
    assert made == [1, 1]


def test_retry_failed_and_the_retry_command(
    further_tmp_root: Path, further_registry: Any, tmp_path: Path, capsys: Any
) -> None:
    project = Project("faults_retry")
    fixed = tmp_path / "fixed"

    class Flaky(Cell, project=project):
        contributions = {"v": int}

        def make(self) -> dict[str, Any]:
            if not fixed.exists():
                raise RuntimeError("flaky")
            return {"v": 1}

    session = Session(store=ArtifactStore(further_tmp_root, max_attempts=2), progress=False)
    for _ in range(2):
        with pytest.raises(CellComputeError, match="RuntimeError: flaky"):
            session.call("faults_retry.flaky")
    fixed.touch()
    with pytest.raises(CellComputeError, match="reaching max_attempts=2"):
        session.call("faults_retry.flaky")  # fixed, but refused until retried
    assert session.call("faults_retry.flaky", retry_failed=True).v == 1
    key = session.plan("faults_retry.flaky").roots[0].key
    state = session.store.read_state("faults_retry", "flaky", key)
    assert state is not None and state.status == "success" and state.reset_at is not None

    fixed.unlink()

    class Flaky2(Cell, project=project):
        contributions = {"v": int}

        def make(self) -> dict[str, Any]:
            if not fixed.exists():
                raise RuntimeError("flaky")
            return {"v": 2}

    for _ in range(3):
        with pytest.raises(CellComputeError):
            session.call("faults_retry.flaky2")
    key2 = session.plan("faults_retry.flaky2").roots[0].key
    fixed.touch()
    assert (
        cli_main(["retry", "--root", str(further_tmp_root), "faults_retry.flaky2", key2[:12]]) == 0
    )
    assert "2 failed attempt(s) reset" in capsys.readouterr().out
    assert session.call("faults_retry.flaky2").v == 2
    with pytest.raises(SystemExit, match="is stored"):
        cli_main(["retry", "--root", str(further_tmp_root), "faults_retry.flaky2", key2])


# --- disk full, read-only root -----------------------------------------------------------------


@contextlib.contextmanager
def tmpfs(where: Path, size: str = "1m", *options: str) -> Iterator[Path]:
    where.mkdir(parents=True, exist_ok=True)
    opts = ",".join((f"size={size}", *options))
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(where)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip() or 'not root'})")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def _no_lock_left(root: Path) -> None:
    assert not list(root.rglob("lock")), list(root.rglob("lock"))


def test_disk_full_is_a_store_error_naming_the_fix_and_leaves_no_lock(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "small") as disk:
        store = ArtifactStore(disk / "root", poll_s=0.02, max_attempts=1)
        with pytest.raises(StoreError) as info:  # 3.2 MB into 1 MB, while committing
            store.ensure(P, C, KEY, lambda d, lg: {"big": np.zeros(400_000)}, {})
        message = str(info.value)
        assert f"{P}.{C}@{KEY[:8]}" in message and KEY in message and str(disk / "root") in message
        assert "no space left" in message and "free space" in message
        assert "picklable" not in message
        _no_lock_left(disk)
        assert not list(disk.rglob("result.tmp-*"))
        state = store.read_state(P, C, KEY)
        assert state is not None and (state.status, state.failures) == ("environment", 0)

        filler = disk / "filler"
        with open(filler, "wb") as fh, contextlib.suppress(OSError):
            while True:
                fh.write(b"\0" * 65536)
        with pytest.raises(StoreError, match="no space left") as full:
            store.ensure(P, C, KEY2, lambda d, lg: {"v": 1}, {})
        assert f"{P}.{C}@{KEY2[:8]}" in str(full.value)
        _no_lock_left(disk)  # not even an empty one
        filler.unlink()
        assert store.ensure(P, C, KEY2, lambda d, lg: {"v": 1}, {}).hit is False
        assert store.ensure(P, C, KEY, lambda d, lg: {"v": 2}, {}).hit is False  # not counted


def test_a_read_only_mount_is_a_store_error_and_stored_results_stay_readable(
    tmp_path: Path,
) -> None:
    with tmpfs(tmp_path / "ro") as disk:
        # no SQL index: its open SQLite file would keep the mount busy (remount fails)
        store = ArtifactStore(disk / "root", poll_s=0.02, index_url="none")
        store.ensure(P, C, KEY, lambda d, lg: {"v": 1}, {})
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        assert store.ensure(P, C, KEY, lambda d, lg: {"v": 9}, {}).hit is True
        assert store.load(P, C, KEY) == {"v": 1}
        with pytest.raises(StoreError, match="read-only filesystem") as info:
            store.ensure(P, C, KEY2, lambda d, lg: {"v": 1}, {})
        assert f"{P}.{C}@{KEY2[:8]}" in str(info.value) and "FURTHER_ROOT" in str(info.value)
        _no_lock_left(disk)


READ_ONLY_CHILD = """
import sys
from further_dagster.errors import StoreError
from further_dagster.store import ArtifactStore
store = ArtifactStore(sys.argv[1], poll_s=0.02)
stored = store.ensure("faults", "cell", sys.argv[3], lambda d, lg: {"v": 9}, {})
print("hit", stored.hit, store.load("faults", "cell", sys.argv[3]))
try:
    store.ensure("faults", "cell", sys.argv[2], lambda d, lg: {"v": 1}, {})
except StoreError as exc:
    print(exc)
    sys.exit(3)
"""


def test_a_chmod_0555_root_is_a_store_error(tmp_path: Path) -> None:
    root = tmp_path / "root"
    ArtifactStore(root).ensure(P, C, KEY, lambda d, lg: {"v": 1}, {})
    prefix: list[str] = []
    if os.geteuid() == 0:  # root ignores 0555: drop the capabilities that let it
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv: cannot make a directory read-only")
        prefix = [setpriv, "--bounding-set", "-dac_override,-dac_read_search,-fowner", "--"]
    dirs = [root, *(p for p in root.rglob("*") if p.is_dir())]
    for path in dirs:
        os.chmod(path, 0o555)
    try:
        child = subprocess.run(
            [*prefix, sys.executable, "-c", READ_ONLY_CHILD, str(root), KEY2, KEY],
            env=_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        for path in dirs:
            os.chmod(path, 0o755)
    assert child.returncode == 3, child.stderr[-2000:]
    assert "may not write" in child.stdout and f"{P}.{C}@{KEY2[:8]}" in child.stdout
    assert str(root) in child.stdout and "hit True {'v': 1}" in child.stdout
    _no_lock_left(root)


# --- Ctrl-C of a Session -----------------------------------------------------------------------

CTRL_C_CHILD = """
import sys, time
import tests.store._fault_cells
from further_dagster import Session
session = Session(mode=sys.argv[1], max_workers=2, progress=False)
try:
    session.call("fault_ctrlc.both")
except KeyboardInterrupt:
    print("INTERRUPTED", flush=True)
"""


@pytest.mark.parametrize("mode", ["LOCAL", "LOCAL_PROCESSES"])
def test_ctrl_c_of_a_session_returns_at_once(tmp_path: Path, mode: str) -> None:
    root, ready = tmp_path / "root", tmp_path / "ready"
    ready.mkdir()
    child = subprocess.Popen(
        [sys.executable, "-c", CTRL_C_CHILD, mode],
        cwd=REPO,
        env=_env(FURTHER_ROOT=str(root), FAULT_READY_DIR=str(ready)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    workers: list[int] = []
    try:
        wait_for(lambda: len(list(ready.glob("[ab]"))) == 2, timeout=60)
        workers = [int(p.read_text().split()[0]) for p in ready.glob("[ab]")]
        t0 = time.monotonic()
        child.send_signal(signal.SIGINT)
        assert child.stdout is not None
        line = child.stdout.readline()
        returned = time.monotonic() - t0
        child.wait(timeout=30)  # and the process can exit: no make() thread is waited for
    finally:
        child.kill()
        if mode == "LOCAL_PROCESSES":  # terminated by the Session: give them time to clean up
            with contextlib.suppress(AssertionError):
                wait_for(lambda: not any(liveness.process_stat(pid) for pid in workers), 10)
            for pid in workers:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        _, err = child.communicate(timeout=30)
    assert line.strip() == "INTERRUPTED", err[-3000:]
    print(f"\nCtrl-C of a {mode} Session returned in {returned * 1000:.0f} ms")
    assert returned < 2.0
    assert child.returncode == 0, err[-3000:]
    store = ArtifactStore(root)
    keys = [k for k in (root / "fault_ctrlc" / "sleepy").iterdir()]
    assert len(keys) == 2
    for inst in keys:
        state = store.read_state("fault_ctrlc", "sleepy", inst.name)
        assert state is not None and state.status == "interrupted", state
        assert state.failures == 0 and not (inst / "lock").exists()
    assert not any(liveness.process_stat(pid) for pid in workers if mode == "LOCAL_PROCESSES")


# --- FURTHER_FSYNC -----------------------------------------------------------------------------


def test_fsync_flushes_every_file_and_directory_before_the_rename(
    make_store: Callable[..., ArtifactStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FURTHER_FSYNC", "1")
    store = make_store()
    assert store.fsync is True
    flushed: list[int] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (flushed.append(fd), real(fd))[1])

    def compute(tmp_dir: Path, logger: logging.Logger) -> Mapping[str, Any]:
        (tmp_dir / "extra.txt").write_text("side")
        return {"a": 1, "b": np.arange(3)}

    store.ensure(P, C, KEY, compute, {})
    # 4 files + the temporary dir + the instance dir after the rename + 2 state writes (x2)
    assert len(flushed) >= 8
    assert store.load(P, C, KEY)["a"] == 1
    monkeypatch.setenv("FURTHER_FSYNC", "sometimes")
    with pytest.raises(ConfigurationError, match="FURTHER_FSYNC='sometimes'"):
        make_store()
    assert make_store(fsync=False).fsync is False
