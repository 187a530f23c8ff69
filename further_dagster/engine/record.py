"""The queryable record: what `Session.query`, `instances`, `results` and `explain` do.

Everything here reads the store's SQL index (store/index/), which the store writes at every
commit; results themselves are loaded from the store's files, checked as every load is.
`further-dagster ls / show / explain / gc / index rebuild` use the same functions.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from further_dagster.core.cell import Cell, Contributions
from further_dagster.core.instances import Instance
from further_dagster.core.project import resolve_cell
from further_dagster.core.versions import key_version, parse_version, split_address
from further_dagster.errors import RecordIndexError, UnknownCellError, VersionError
from further_dagster.store import ArtifactStore, Expected

if TYPE_CHECKING:
    import pandas as pd

    from further_dagster.store.index.query import Node

NO_INDEX = (
    "this store keeps no SQL index (index_url / FURTHER_INDEX_URL is 'none'): unset it for "
    "the SQLite default <root>/.index.sqlite, then `further-dagster index rebuild`"
)


def index_url(store: ArtifactStore) -> str:
    """The store's index URL, or a `RecordIndexError` saying how to get one."""
    url = getattr(store, "index_url", None)
    if url is None:
        raise RecordIndexError(NO_INDEX)
    return str(url)


def _checked_url(store: ArtifactStore) -> str:
    """`index_url`, with a warning when reading made a new index over a store that holds
    results (they are not in it until a rebuild)."""
    from further_dagster.store.index.connection import connect
    from further_dagster.store.index.writer import warn_if_behind

    url = index_url(store)
    with connect(url):
        pass
    warn_if_behind(url, str(store.root))
    return url


def _split(cell: str | type[Cell]) -> tuple[str, str, dict[str, Any]]:
    """Project, cell and the version columns a reference pins.

    A project's versions are different projects in the record: a reference names one (its
    `@version`, else the current version defined in this process; NULL is the default 1).
    Cell versions share a view (its `api_version` column); only an explicit `cell@1.4` pins one.
    A reference to a cell this process does not define pins only what it spells out.
    """
    try:
        target = resolve_cell(cell)
    except (UnknownCellError, VersionError):  # not defined here: read the record as it is
        target = None
    if target is not None:
        pins: dict[str, Any] = {"project_version": target.project.key_version}
        address = split_address(cell) if isinstance(cell, str) else None
        if address is not None and address.cell_version is not None:
            pins["api_version"] = str(target.api_version)
        return target.project.name, target.name, pins
    address = split_address(str(cell))
    if address is None or address.project is None:
        raise RecordIndexError(f"{cell!r} is not 'project.cell' (e.g. 'study.fit')")
    pins = {}
    if address.project_version is not None:
        version = parse_version(address.project_version, where=f"cell reference {cell!r}")
        pins["project_version"] = key_version(version)
    if address.cell_version is not None:
        pins["api_version"] = address.cell_version
    return address.project, address.cell, pins


def query(store: ArtifactStore, sql: str, params: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """`sql` against the index, as a DataFrame (see README "The record" for the tables)."""
    from further_dagster.store.index.query import query_frame

    return query_frame(_checked_url(store), sql, params)


def instances(
    store: ArtifactStore,
    cell: str | type[Cell],
    where: Mapping[str, Any] | None = None,
    *,
    status: str | None = None,
) -> pd.DataFrame:
    """The rows of `cell`'s view whose columns (Specs fields, recorded contributions, status,
    ...) equal `where`'s values; a list value matches any of its items."""
    from further_dagster.store.index.query import select_cell

    project, name, pins = _split(cell)
    conditions = {**pins, **(where or {})}
    if status is not None:
        conditions["status"] = status
    return select_cell(_checked_url(store), project, name, conditions)


def results(
    store: ArtifactStore, cell: str | type[Cell], where: Mapping[str, Any] | None = None
) -> list[Contributions]:
    """The stored results of `cell` matching `where`, loaded from the store (oldest first).

    The cell must be defined in this process (its declaration checks the loaded result); a
    result of another version of it is loaded without that check.
    """
    target = resolve_cell(cell)
    rows = instances(store, target, where, status="success")
    project, name = target.project.name, target.name
    stored_specs = dict(
        query(
            store,
            "SELECT key, specs FROM instances WHERE project = :p AND cell = :c",
            {"p": project, "c": name},
        ).itertuples(index=False, name=None)
    )
    out = []
    for row in rows.to_dict("records"):
        same = str(row["logic_version"]) == str(target.logic_version) and str(
            row["api_version"]
        ) == str(target.api_version)
        expect = Expected(contributions=target.contributions if same else None, codec=target.codec)
        values = store.load(project, name, str(row["key"]), expect=expect)
        raw = json.loads(stored_specs.get(row["key"]) or "{}")
        try:
            specs = target.Specs.model_validate(raw)
        except ValueError:  # another version's Specs: kept as they were stored
            specs = target.Specs.model_construct(**raw)
        out.append(Contributions(values, key=str(row["key"]), specs=specs, cell=target.full_name))
    return out


def key_of(target: Contributions | Instance | str) -> str:
    """The logic key (or key prefix) a caller means."""
    if isinstance(target, Contributions | Instance):
        return target.key
    if isinstance(target, str) and target:
        return target.rsplit("@", 1)[-1]
    raise RecordIndexError(f"explain takes a result, an Instance or a logic key, not {target!r}")


def find(store: ArtifactStore, target: Contributions | Instance | str) -> dict[str, Any]:
    """The index row of one instance, by result, Instance, key or unique key prefix."""
    from further_dagster.store.index.query import find_keys

    key = key_of(target)
    found = find_keys(_checked_url(store), key)
    if len(found) == 1:
        return found[0]
    if not found:
        raise RecordIndexError(
            f"no instance with key {key!r} in the index {_shown(store)}; if it is stored, "
            f"the index is behind the store: `further-dagster index rebuild --root {store.root}`"
        )
    keys = ", ".join(r["key"] for r in found[:10])
    raise RecordIndexError(f"{key!r} is the start of several keys ({keys}); give more of it")


def _shown(store: ArtifactStore) -> str:
    from further_dagster.settings import redact_url

    return redact_url(index_url(store))


# --- explain ---------------------------------------------------------------------------------


def explain(store: ArtifactStore, target: Contributions | Instance | str) -> str:
    """The instance tree of `target` as text: one block per instance (cell, version, specs,
    key, releases, labels, code commit, when and where computed, recorded contributions),
    its dependencies indented below it by edge."""
    from further_dagster.store.index.query import tree

    row = find(store, target)
    return "\n".join(render(tree(index_url(store), row["key"]))) + "\n"


def _when(value: Any) -> str:
    from further_dagster.store.index.query import as_utc

    t = as_utc(value)
    return "?" if t is None else t.strftime("%Y-%m-%d %H:%M:%S UTC")


def _mapping(text: str | None) -> str:
    if not text:
        return "-"
    value = json.loads(text)
    if isinstance(value, dict):
        return ", ".join(f"{k}={json.dumps(v)}" for k, v in sorted(value.items())) or "-"
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return ", ".join(value) or "-"
    return json.dumps(value)


def _versions(row: Mapping[str, Any]) -> str:
    return f"api {row.get('api_version') or '?'}, logic {row.get('logic_version') or '?'}"


def _code(row: Mapping[str, Any]) -> str:
    commit = row.get("git_commit")
    if not commit:
        return "-"
    text = f"git {commit[:12]}"
    if row.get("git_branch"):
        text += f" ({row['git_branch']})"
    dirty = row.get("git_dirty")
    if dirty is not None:
        text += ", dirty" if dirty else ", clean"
    return text


def _computed(row: Mapping[str, Any]) -> str:
    text = f"{_when(row.get('finished_at'))} on {row.get('host') or '?'}"
    if row.get("pid") is not None:
        text += f" (pid {row['pid']})"
    if row.get("duration_s") is not None:
        text += f", {float(row['duration_s']):.3f} s"
    if row.get("slurm_job_id"):
        text += f", slurm job {row['slurm_job_id']}"
    return text


def render(node: Node, depth: int = 0) -> list[str]:
    """The lines of `node` and its dependencies (pure: the golden test pins it)."""
    pad = "    " * depth
    edge = f"{node.edge}: " if node.edge else ""
    row = node.row
    if row is None:
        return [f"{pad}{edge}?@{node.key[:12]}  (not in the index)"]
    project = row["project"]
    if row.get("project_version"):
        project = f"{project}@{row['project_version']}"
    lines = [f"{pad}{edge}{project}.{row['cell']}@{node.key[:12]}  {row['status']}"]
    detail = [
        ("key", node.key),
        (
            "version",
            f"api {row.get('api_version') or '?'}, logic {row.get('logic_version') or '?'}",
        ),
        ("specs", _mapping(row.get("specs"))),
        ("releases", _mapping(row.get("releases"))),
        ("labels", _mapping(row.get("labels"))),
        ("code", _code(row)),
        ("computed", _computed(row)),
    ]
    if node.recorded:
        shown = ", ".join(f"{k}={json.dumps(v)[:60]}" for k, v in node.recorded.items())
        detail.append(("recorded", shown))
    if row.get("error_type"):
        detail.append(("error", f"{row['error_type']}: {row.get('error_message') or ''}"[:200]))
    lines.extend(f"{pad}  {name:<9} {value}" for name, value in detail)
    for child in node.children:
        lines.extend(render(child, depth + 1))
    return lines


# --- ls / show ---------------------------------------------------------------------------


def ls_lines(
    store: ArtifactStore, project: str | None = None, cell: str | None = None
) -> list[str]:
    """One line per indexed instance: key, project.cell, status, finished, Specs."""
    sql = "SELECT key, project, cell, status, finished_at, specs FROM instances"
    clauses, params = [], {}
    if project is not None:
        clauses.append("project = :p")
        params["p"] = project
    if cell is not None:
        clauses.append("cell = :c")
        params["c"] = cell
    if clauses:
        sql += " WHERE " + " AND ".join(clauses)
    from further_dagster.store.index.query import query_frame

    order = " ORDER BY project, cell, finished_at, key"
    frame = query_frame(_checked_url(store), sql + order, params)
    return [
        f"{r.key}  {r.project}.{r.cell}  {r.status:<11} {_when(_none(r.finished_at))}  "
        f"{_mapping(_none(r.specs))}"
        for r in frame.itertuples(index=False)
    ]


def _none(value: Any) -> Any:
    """pandas' missing values (NaT, NaN) as None."""
    try:
        import pandas as pd

        return None if pd.isna(value) else value
    except (TypeError, ValueError):
        return value


def show_lines(store: ArtifactStore, target: str) -> list[str]:
    """Every column of one instance's row, its contributions and its edges."""
    from further_dagster.store.index.query import query_frame

    row = find(store, target)
    url = index_url(store)
    lines = [f"{row['project']}.{row['cell']}@{row['key']}"]
    lines += [f"  {name:<14} {value}" for name, value in row.items() if value is not None]
    outs = query_frame(
        url,
        "SELECT name, codec, size, recorded, value_json FROM contributions WHERE key = :k "
        "ORDER BY name",
        {"k": row["key"]},
    )
    lines.append("  contributions:")
    for c in outs.itertuples(index=False):
        value = f" = {c.value_json!s}" if c.recorded else ""
        lines.append(f"    {c.name}  {c.codec}, {c.size} bytes{value}")
    deps = query_frame(
        url,
        "SELECT edge, position, child_key, swept FROM edges WHERE parent_key = :k "
        "ORDER BY edge, position",
        {"k": row["key"]},
    )
    if len(deps):
        lines.append("  depends on:")
        for d in deps.itertuples(index=False):
            edge = f"{d.edge!s}[{d.position!s}]" if d.swept else str(d.edge)
            lines.append(f"    {edge} -> {d.child_key!s}")
    return lines


# --- gc ----------------------------------------------------------------------------------


def collect(
    store: ArtifactStore,
    *,
    roots: Iterable[Instance] | None,
    older_than: dt.datetime | None,
    dry_run: bool,
) -> list[tuple[str, str]]:
    """Delete what `store.index.collect` picks: instances of the roots' projects that the
    roots do not reach (`roots`: the current definitions' instances), or older than
    `older_than`; never a reachable one nor one whose lease is held. Returns (label, outcome)
    per candidate: "would delete" (dry run), "deleted", "held" (skipped) or "gone"."""
    from further_dagster.core.instances import walk
    from further_dagster.store.index.collect import candidates, delete_instance

    url = index_url(store)
    keys: list[str] | None = None
    projects: set[str] | None = None
    if roots is not None:
        everything = walk(list(roots))
        keys = [i.key for i in everything]
        projects = {i.cell.project.name for i in everything}
    found = candidates(url, roots=keys, projects=projects, older_than=older_than)
    out = []
    for c in found:
        if dry_run:
            out.append((c.label, "would delete"))
            continue
        outcome = delete_instance(str(store.root), c.project, c.cell, c.key, store.lease_s)
        if outcome != "held":
            store.reindex(c.project, c.cell, c.key)  # its rows go with it
        out.append((c.label, outcome))
    return out


__all__ = [
    "collect",
    "explain",
    "find",
    "index_url",
    "instances",
    "ls_lines",
    "query",
    "render",
    "results",
    "show_lines",
]
