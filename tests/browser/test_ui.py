"""What a user of the Dagster UI sees: dagster-webserver over a materialized example_project.

One module-scoped server: a fresh DAGSTER_HOME and FURTHER_ROOT, example_project materialized
once with the README's CLI command, then `dagster-webserver -w workspace.yaml` on a free
127.0.0.1 port. Checked two ways:

* GraphQL (plain HTTP POST, as the UI itself asks): assets, groups, partitions, the metadata
  of the latest materialization, a sweep backfill being accepted (no daemon needed for that);
* headless Chromium (Debian's `chromium`, installed by the fixture if missing): each page is
  rendered once, with `--dump-dom` for the text the React app put on the page and
  `--screenshot` for a PNG that must not be blank. The PNGs stay in pytest's tmp directory
  (`/tmp/pytest-of-$USER/pytest-N/browser0/`) for a person to look at.

The server's process group is killed at teardown, and the teardown fails if anything survives.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.browser._png import read_png

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
# The README's cells; example_project may grow more, which these tests tolerate.
CELLS = ("raw_data", "features", "split", "fit", "baseline", "report")
LOCATION = "example_project"
READY_TIMEOUT = 60.0  # seconds for the webserver to answer and load the code location
WINDOW = (1600, 1000)
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    f"--window-size={WINDOW[0]},{WINDOW[1]}",
    # Virtual time stands still while a request is in flight, so the React app has fetched and
    # rendered everything it asks for on load well before this budget runs out.
    "--virtual-time-budget=15000",
]


# --------------------------------------------------------------------------- processes


def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes in a process group, from /proc."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        state, _ppid, pgrp = text[text.rindex(")") + 2 :].split()[:3]
        if int(pgrp) == pgid and state != "Z":
            pids.append(int(stat.parent.name))
    return pids


def _kill_group(proc: subprocess.Popen, grace: float) -> None:
    """SIGTERM the process group, SIGKILL it after `grace` seconds, and wait until it is gone."""
    pgid = proc.pid  # started with start_new_session=True: its own group
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        if proc.poll() is not None and not _group_members(pgid):
            return
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if proc.poll() is not None and not _group_members(pgid):
                return
            time.sleep(0.1)
    survivors = _group_members(pgid)
    assert not survivors, f"processes of group {pgid} survived SIGKILL: {survivors}"


def _run(args: list, env: dict, timeout: float) -> str:
    """Run a command in its own process group; on a timeout the whole group is killed."""
    proc = subprocess.Popen(
        [str(a) for a in args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc, grace=0)
        out, _ = proc.communicate()
        pytest.fail(f"{args[:4]} timed out after {timeout}s:\n{out[-3000:]}")
    assert proc.returncode == 0, f"{args[:4]} exited {proc.returncode}:\n{out[-3000:]}"
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- GraphQL


def graphql(base_url: str, query: str, variables: dict | None = None) -> dict:
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    request = urllib.request.Request(
        f"{base_url}/graphql", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        payload = json.loads(response.read())
    assert not payload.get("errors"), payload["errors"]
    return payload["data"]


WORKSPACE_QUERY = """
{ workspaceOrError { __typename ... on Workspace { locationEntries {
    name loadStatus
    locationOrLoadError { __typename ... on PythonError { message stack } }
} } } }
"""


def _wait_until_ready(proc: subprocess.Popen, base_url: str, log: Path) -> None:
    """Bounded wait: /server_info answers, then the code location has loaded."""
    deadline = time.monotonic() + READY_TIMEOUT
    answered = False
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"dagster-webserver exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if not answered:
                with urllib.request.urlopen(f"{base_url}/server_info", timeout=2) as r:
                    answered = json.loads(r.read()).get("dagster_webserver_version") is not None
            if answered:
                data = graphql(base_url, WORKSPACE_QUERY)["workspaceOrError"]
                entries = {e["name"]: e for e in data.get("locationEntries", [])}
                entry = entries.get(LOCATION)
                if entry and entry["loadStatus"] == "LOADED":
                    loaded = entry["locationOrLoadError"]
                    assert loaded["__typename"] == "RepositoryLocation", loaded
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.25)
    pytest.fail(f"dagster-webserver not ready within {READY_TIMEOUT}s:\n{log.read_text()[-3000:]}")


# --------------------------------------------------------------------------- fixtures


@dataclass(frozen=True)
class Server:
    url: str
    env: dict
    dagster_home: Path
    further_root: Path
    partition_range: str  # `further-dagster partition-range` output, "first...last"
    tmp: Path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("browser")
    home, store = tmp / "dagster_home", tmp / "further"
    home.mkdir()
    store.mkdir()
    # No telemetry (the webserver would otherwise start a thread that uploads it).
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {**os.environ, "DAGSTER_HOME": str(home), "FURTHER_ROOT": str(store)}

    span = _run([BIN / "further-dagster", "partition-range", "-m", LOCATION], env, 120).strip()
    materialize = [BIN / "dagster", "asset", "materialize", "-m", LOCATION, "--select", "*"]
    _run([*materialize, "--partition-range", span], env, timeout=300)

    for _attempt in range(3):  # a free port can be taken between choosing and binding it
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        log = tmp / f"webserver-{port}.log"
        with log.open("w") as out:
            proc = subprocess.Popen(
                [BIN / "dagster-webserver", "-w", "workspace.yaml", "-h", "127.0.0.1"]
                + ["-p", str(port)],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            _wait_until_ready(proc, url, log)
            break
        except BaseException:
            _kill_group(proc, grace=5)
            if "address already in use" not in log.read_text().lower():
                raise
    else:
        pytest.fail("dagster-webserver found no free port in 3 attempts")

    try:
        # A fresh instance greets its first visitor with a "Join the Dagster community" dialog
        # over the page; this is what its "Skip" button does.
        assert graphql(url, "mutation { setNuxSeen }")["setNuxSeen"] is True
        yield Server(url, env, home, store, span, tmp)
    finally:
        _kill_group(proc, grace=15)


def _find_chromium() -> str | None:
    found = shutil.which("chromium")
    if found:
        return found
    return "/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None


@pytest.fixture(scope="module")
def chromium() -> str:
    """Debian's chromium; installed with apt-get if missing. Never skips: fails if it can't."""
    found = _find_chromium()
    if found:
        return found
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    apt = ["apt-get", "-o", "DPkg::Lock::Timeout=300"]  # wait out another apt-get's lock
    install = [*apt, "install", "-y", "--no-install-recommends", "chromium"]
    log = []
    for step in ([install], [[*apt, "update"], install]):  # update only if needed
        for cmd in step:
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
            output = (proc.stdout + proc.stderr)[-1500:]
            log.append(f"$ {' '.join(cmd)} -> exit {proc.returncode}\n{output}")
            if proc.returncode != 0:
                break
        found = _find_chromium()
        if found:
            return found
    pytest.fail("chromium is not installed and apt-get could not install it:\n" + "\n".join(log))


# --------------------------------------------------------------------------- rendering


@dataclass(frozen=True)
class Page:
    url: str
    text: str  # the visible text of the rendered DOM, whitespace collapsed
    screenshot: Path


def render(chromium: str, server: Server, path: str, name: str) -> Page:
    """One headless Chromium run: the DOM after the virtual time budget, and a screenshot."""
    url = server.url + path
    shot = server.tmp / f"{name}.png"
    cmd = [
        chromium,
        *CHROMIUM_FLAGS,
        f"--user-data-dir={server.tmp / f'chromium-profile-{name}'}",
        f"--screenshot={shot}",
        "--dump-dom",
        url,
    ]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        dom, err = proc.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        _kill_group(proc, grace=0)
        dom, err = proc.communicate()
        pytest.fail(f"chromium timed out on {url}:\n{err[-2000:]}")
    finally:
        _kill_group(proc, grace=5)  # a helper left behind would outlive the test
    assert proc.returncode == 0, f"chromium exited {proc.returncode} on {url}:\n{err[-2000:]}"
    body = re.sub(r"<(script|style|noscript)\b.*?</\1>", " ", dom, flags=re.S | re.I)
    text = re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", body))).strip()
    return Page(url, text, shot)


def render_ready(
    chromium: str, server: Server, path: str, name: str, expected: list[str], attempts: int = 3
) -> Page:
    """`render`, again while the UI was still loading the code location when the virtual
    time budget ran out (a loaded 2-core machine), then `assert_rendered`."""
    for attempt in range(attempts):
        page = render(chromium, server, path, f"{name}-{attempt}" if attempt else name)
        missing = [s for s in expected if s not in page.text]
        if not missing or "Loading" not in page.text:
            break
    assert_rendered(page, expected)
    return page


def assert_rendered(page: Page, expected: list[str]) -> None:
    missing = [s for s in expected if s not in page.text]
    assert not missing, f"{page.url}: {missing} not on the page; its text:\n{page.text[:3000]}"
    for bad in ("Join the Dagster community", "Unexpected GraphQL error", "Something went wrong"):
        assert bad not in page.text, f"{page.url} shows {bad!r}: see {page.screenshot}"


def assert_not_blank(page: Page) -> None:
    shot = page.screenshot
    assert shot.is_file(), f"no screenshot of {page.url}"
    data = shot.read_bytes()
    assert len(data) > 20_000, f"{shot} is only {len(data)} bytes"
    image = read_png(data)
    assert (image.width, image.height) == WINDOW
    counts = image.colour_counts()
    background = counts.most_common(1)[0][1] / (image.width * image.height)
    assert len(counts) > 100, f"{shot}: only {len(counts)} colours"
    assert background < 0.97, f"{shot}: {background:.0%} of it is one colour"


# --------------------------------------------------------------------------- GraphQL tests


ASSET_NODES = """
{ assetNodes {
    assetKey { path } groupName isPartitioned partitionKeys description
    partitionStats { numMaterialized numPartitions numFailed }
} }
"""


def _asset_nodes(server: Server) -> dict[str, dict]:
    nodes = graphql(server.url, ASSET_NODES)["assetNodes"]
    return {"/".join(n["assetKey"]["path"]): n for n in nodes}


def _fit_partition_keys(server: Server) -> list[str]:
    return _asset_nodes(server)["example/fit"]["partitionKeys"]


def test_asset_nodes_and_group(server):
    nodes = _asset_nodes(server)
    missing = {f"example/{c}" for c in CELLS} - set(nodes)
    assert not missing, f"{missing} not among the asset nodes {sorted(nodes)}"
    groups = {k: n["groupName"] for k, n in nodes.items() if k.startswith("example/")}
    assert set(groups.values()) == {"example"}, groups
    assert nodes["example/raw_data"]["description"].startswith("Synthetic linear data")
    partitioned = {c for c in CELLS if nodes[f"example/{c}"]["isPartitioned"]}
    assert partitioned == {"fit"}


def test_fit_is_partitioned_by_readable_partition_keys(server):
    from example_project.cells import ALPHAS

    fit = _asset_nodes(server)["example/fit"]
    keys = fit["partitionKeys"]
    assert fit["isPartitioned"] and len(keys) == 4
    # the keys say which alpha is which (issue #9), in the sweep's order
    assert keys == [f"alpha={a}" for a in ALPHAS], keys
    assert server.partition_range == f"{keys[0]}...{keys[-1]}"
    # the description's table: | `alpha=0.01` | alpha=0.01 |
    rows = dict(re.findall(r"^\| `([^`]+)` \| (.+?) \|$", fit["description"], re.M))
    assert sorted(rows) == sorted(keys)
    assert sorted(rows.values()) == sorted(f"alpha={a}" for a in ALPHAS)
    stats = fit["partitionStats"]
    assert stats == {"numMaterialized": 4, "numPartitions": 4, "numFailed": 0}


REPORT_MATERIALIZATION = """
{ assetOrError(assetKey: {path: ["example", "report"]}) { __typename ... on Asset {
    assetMaterializations(limit: 1) { runId metadataEntries {
        label __typename
        ... on TextMetadataEntry { text }
        ... on PathMetadataEntry { path }
    } }
} } }
"""


def test_report_materialization_metadata(server):
    asset = graphql(server.url, REPORT_MATERIALIZATION)["assetOrError"]
    assert asset["__typename"] == "Asset"
    (latest,) = asset["assetMaterializations"]
    entries = {e["label"]: e for e in latest["metadataEntries"]}
    assert {"further/logic_key", "further/cache", "further/artifact_path"} <= set(entries)
    key = entries["further/logic_key"]["text"]
    assert re.fullmatch(r"[0-9a-f]{32}", key), key
    assert entries["further/cache"]["text"] == "miss"  # materialized once, on a fresh store
    path = Path(entries["further/artifact_path"]["path"])
    assert path == server.further_root / "example" / "report" / key
    assert (path / "result").is_dir()


# --------------------------------------------------------------------------- browser tests


def test_asset_page_of_the_swept_cell(server, chromium):
    keys = _fit_partition_keys(server)
    page = render_ready(
        chromium,
        server,
        "/assets/example/fit",
        "fit_asset",
        [
            "example",
            "fit",
            "Ridge regression with penalty alpha",  # the description, rendered
            "alpha=0.01",
            "alpha=0.1",
            "alpha=10.0",
            "Latest materialization",
            "further/cache",
            "further/artifact_path",
            *keys,
        ],
    )
    assert_not_blank(page)


def test_partitions_page_shows_readable_partition_keys(server, chromium):
    from example_project.cells import ALPHAS

    readable = [f"alpha={a}" for a in ALPHAS]
    assert readable == ["alpha=0.01", "alpha=0.1", "alpha=1.0", "alpha=10.0"]
    page = render_ready(
        chromium,
        server,
        "/assets/example/fit?view=partitions",
        "fit_partitions",
        ["example", "fit", "4 Partitions Selected", "Materialized (4)", "Missing (0)", *readable],
    )
    # listed in the sweep's order, and no partition is named by a hex hash (issue #9)
    listed = re.findall(r"alpha=[0-9.]+", page.text)
    assert list(dict.fromkeys(listed)) == readable, listed
    assert not re.search(r"\b[0-9a-f]{12,}\b", page.text), page.text[:3000]
    assert_not_blank(page)


def test_global_asset_lineage(server, chromium):
    page = render_ready(
        chromium, server, "/asset-groups", "global_lineage", ["Global asset lineage", *CELLS]
    )
    assert_not_blank(page)


def test_asset_group_lineage(server, chromium):
    expected = ["example", LOCATION, *CELLS, "4 partitions", "Materialized"]
    path = f"/locations/{LOCATION}/asset-groups/example"
    page = render_ready(chromium, server, path, "example_group", expected)
    assert_not_blank(page)


# --------------------------------------------------------------------------- backfills
# Last in the module: they leave REQUESTED backfills (no daemon runs them) on the instance.

LAUNCH_BACKFILL = """
mutation($partitions: [String!]) {
  launchPartitionBackfill(backfillParams: {
    assetSelection: [{path: ["example", "fit"]}]
    partitionNames: $partitions
  }) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message stack }
    ... on Error { message }
  }
}
"""

BACKFILL = """
query($id: String!) { partitionBackfillOrError(backfillId: $id) {
    __typename ... on PartitionBackfill { status partitionNames assetSelection { path } }
} }
"""


def test_sweep_backfill_is_accepted(server):
    keys = _fit_partition_keys(server)
    launched = graphql(server.url, LAUNCH_BACKFILL, {"partitions": keys})
    result = launched["launchPartitionBackfill"]
    assert result["__typename"] == "LaunchBackfillSuccess", result
    backfill = graphql(server.url, BACKFILL, {"id": result["backfillId"]})
    backfill = backfill["partitionBackfillOrError"]
    assert backfill["__typename"] == "PartitionBackfill"
    assert backfill["status"] == "REQUESTED"  # waiting for a daemon
    assert sorted(backfill["partitionNames"]) == sorted(keys)
    assert backfill["assetSelection"] == [{"path": ["example", "fit"]}]


def test_readme_backfill_mutation_runs_as_written(server):
    readme = (ROOT / "README.md").read_text()
    blocks = [b for b in re.findall(r"```graphql\n(.*?)```", readme, re.S) if "Backfill" in b]
    assert len(blocks) == 1, "README has no launchPartitionBackfill example"
    (mutation,) = blocks
    listed = re.search(r"partitionNames: \[(.*?)\]", mutation).group(1)
    assert sorted(re.findall(r'"([^"]+)"', listed)) == sorted(_fit_partition_keys(server))
    result = graphql(server.url, mutation)["launchPartitionBackfill"]
    assert result["__typename"] == "LaunchBackfillSuccess", result
