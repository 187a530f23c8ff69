"""`further-dagster`: small helpers around the stock dagster CLI.

further-dagster partition-range -m example_project
    prints FIRST...LAST of the (one) partitions definition of the code location, for
    `dagster asset materialize --select '*' --partition-range "$(...)"`.

further-dagster materialize -m MODULE [--select SELECTION] [--partition KEY]
    `dagster asset materialize` with Dagster's selection syntax (`*`, `group:example`,
    `+example/report`, `example/fit`) and every partition filled in (or one, by its key, e.g.
    `alpha=0.1`): one run per partitions definition, stored steps never started.

further-dagster verify [--root R] [--project P] [--cell C] [--quarantine]
    checks every committed result under the root (or of one project / cell): real directories,
    a consistent manifest, each file's size and blake2b digest (always, whatever
    FURTHER_VERIFY says). Lists the damaged ones and exits 1 if there is any; --quarantine moves
    them aside (<instance>/damaged-<utc stamp>/, never deleted) so the next call recomputes
    them. Nothing is decoded, so no pickle is run.

further-dagster retry [--root R] project.cell KEY
    lets a refused key (it failed FURTHER_MAX_ATTEMPTS times, or returned wrong contributions)
    run again: resets its failure count, recorded in its state.json; the next call computes it.
    KEY is the logic key or a unique prefix of it (a partition key, say).

further-dagster ls [--project P] [--cell C] | show KEY | explain KEY
    the record (the store's SQL index): every instance; one instance's row, contributions and
    dependencies; its instance tree (cell, version, specs, releases, code, when and where).
further-dagster gc [--dry-run] [--older-than DATE] [-m MODULE]
    deletes instances the module's current definitions do not reach (or, without -m, that no
    instance newer than DATE needs), older than DATE if given; never one that is reachable or
    whose lease is held. --dry-run lists them.
further-dagster index rebuild
    rebuilds the SQL index from the store's files (the source of truth).
    Each of these takes --root R (default FURTHER_ROOT) and --index-url URL (FURTHER_INDEX_URL).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from further_dagster.dagster.location import Location


def _location(module: str, attribute: str) -> Location:
    from further_dagster.dagster import location_of

    sys.path.insert(0, ".")
    defs = getattr(importlib.import_module(module), attribute)
    location = location_of(defs)
    if location is None:
        raise SystemExit(f"{module}.{attribute} was not made by further_dagster.build_definitions")
    return location


def partition_range(module: str, attribute: str = "defs") -> str:
    """FIRST...LAST of the code location's one partitions definition."""
    location = _location(module, attribute)
    sets = {
        a.partitions.name: a.partitions
        for a in location.asset_by_key.values()
        if a.partitions is not None
    }
    if not sets:
        raise SystemExit(f"{module} has no partitioned (swept) cells: use --select '*' alone")
    if len(sets) > 1:
        names = ", ".join(sorted(sets))
        raise SystemExit(
            f"{module} has several partitions definitions ({names}); the dagster CLI can "
            "materialize one per command: select the assets of one sweep, or run a backfill."
        )
    (parts,) = sets.values()
    return f"{parts.keys[0]}...{parts.keys[-1]}"


def retry(root: str | None, target: str, key: str) -> str:
    """Reset the failures of `target` ("project.cell") at `key` (or a unique prefix of it) in
    the store at `root` (default: FURTHER_ROOT, else the project's `.further`); what was done."""
    from further_dagster.store import ArtifactStore

    project, dot, cell = target.partition(".")
    if not dot or not project or not cell:
        raise SystemExit(f"retry: {target!r} is not project.cell (e.g. example.fit)")
    store = ArtifactStore(root)
    full = _full_key(store.root / project / cell, key)
    label = f"{project}.{cell}@{full[:12]}"
    before = store.read_state(project, cell, full)
    if store.is_stored(project, cell, full):
        raise SystemExit(f"retry: {label} is stored; nothing to retry")
    if before is None:
        raise SystemExit(f"retry: {label} has no recorded attempt under {store.root}")
    reset = store.reset_failures(project, cell, full)
    if reset is None:
        raise SystemExit(
            f"retry: {label} is {before.status}, not refused: nothing to reset (a running "
            f"attempt, or the next call runs it anyway)"
        )
    last = f"; last error {before.error.type}: {before.error.message}" if before.error else ""
    return (
        f"{label}: {before.failures} failed attempt(s) reset{last}. The next call computes it "
        f"(state: {store.instance_dir(project, cell, full) / 'state.json'})"
    )


def _full_key(cell_dir: Path, key: str) -> str:
    if len(key) == 32:
        return key
    found = sorted(p.name for p in cell_dir.glob(f"{key}*") if len(p.name) == 32) if key else []
    if len(found) != 1:
        what = "no instance" if not found else f"{len(found)} instances ({', '.join(found)})"
        raise SystemExit(f"retry: {what} of {cell_dir} start with {key!r}; give the full key")
    return found[0]


def verify(
    root: str | None,
    project: str | None = None,
    cell: str | None = None,
    *,
    quarantine: bool = False,
    out: TextIO | None = None,
) -> int:
    """Audit the committed results under `root` (see the module docstring); the exit code."""
    import os

    from further_dagster.errors import FurtherError
    from further_dagster.store import ArtifactStore
    from further_dagster.store.integrity import iter_instance_dirs
    from further_dagster.store.layout import validate_name

    write = (out or sys.stdout).write
    try:
        store = ArtifactStore(root)
        for name, what in ((project, "project"), (cell, "cell")):
            if name is not None:
                validate_name(name, what)  # before anything is scanned
        instances = list(iter_instance_dirs(str(store.root), project, cell))
    except FurtherError as exc:
        raise SystemExit(f"verify: {exc}") from None
    checked = damaged = moved = 0
    unverified: list[str] = []
    for inst in instances:
        p, c, k = inst.parts[-3:]
        if not (os.path.islink(inst) or os.path.lexists(inst / "result")):
            continue  # nothing committed: running, failed or already quarantined
        checked += 1
        audit = store.audit(p, c, k, digest=True)
        if audit.problem is None:
            if audit.unverified:
                unverified.append(f"{audit.label} ({', '.join(audit.unverified)})")
            continue
        damaged += 1
        write(f"damaged {audit.label}: {audit.problem}\n")
        if quarantine:
            try:
                where = store.quarantine(p, c, k, f"further-dagster verify: {audit.problem}")
            except FurtherError as exc:
                write(f"  not moved: {exc}\n")
                continue
            if where is not None:
                moved += 1
                write(f"  moved aside to {where}\n")
    for label in unverified:
        write(f"unverified {label}: committed before digests were recorded\n")
    summary = f"checked {checked} result(s) under {store.root}: {damaged} damaged"
    if quarantine:
        summary += f", {moved} moved aside (the next call recomputes them)"
    elif damaged:
        summary += " (--quarantine moves them aside, so the next call recomputes them)"
    if unverified:
        summary += f", {len(unverified)} without recorded digests"
    write(summary + "\n")
    return 1 if damaged else 0


def _add_verify_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    vf = sub.add_parser("verify", help="list (and --quarantine) damaged stored results")
    vf.add_argument("--root", default=None, help="store root (default: FURTHER_ROOT)")
    vf.add_argument("--project", default=None, help="only this project")
    vf.add_argument("--cell", default=None, help="only cells of this name")
    vf.add_argument("--quarantine", action="store_true", help="move damaged results aside (kept)")


def _add_retry_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    rt = sub.add_parser("retry", help="let a refused key run again (reset its failures)")
    rt.add_argument("--root", default=None, help="store root (default: FURTHER_ROOT)")
    rt.add_argument("target", metavar="project.cell")
    rt.add_argument("key", help="the logic key, or a unique prefix of it")


def _add_materialize_command(sub: Any) -> None:
    mat = sub.add_parser(
        "materialize",
        help="dagster asset materialize, every partition filled in (Dagster's --select syntax)",
    )
    mat.add_argument("-m", "--module", required=True)
    mat.add_argument("-a", "--attribute", default="defs")
    mat.add_argument("--select", default="*", help="e.g. '*', 'group:example', '+example/report'")
    mat.add_argument("--partition", default=None, help="one partition key, e.g. alpha=0.1")


def materialize(module: str, attribute: str, select: str, partition: str | None) -> int:
    """Materialize a selection with its partitions filled in (dagster/materialize.py)."""
    import os

    from further_dagster.stored_selection import decide

    sys.path.insert(0, os.getcwd())
    stored = decide(module, attribute, select, partition)
    if stored is not None:
        print(
            f"all {stored.assets} selected asset(s) ({stored.instances} instance(s)) are stored: "
            "no run created (decided by the engine from the store, without Dagster)"
        )
        return 0
    from further_dagster.dagster.materialize import materialize as run
    from further_dagster.errors import FurtherError

    try:
        return 0 if run(module, attribute, select, partition) else 1
    except FurtherError as exc:
        print(f"further-dagster materialize: {exc}", file=sys.stderr)
        return 2


# --- the record: ls, show, explain, gc, index rebuild (engine/record.py) -------------------


def _add_record_commands(sub: Any) -> None:
    def parser(name: str, help: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = sub.add_parser(name, help=help)
        p.add_argument("--root", default=None, help="store root (default: FURTHER_ROOT)")
        p.add_argument("--index-url", default=None, help="default: FURTHER_INDEX_URL")
        return p

    ls = parser("ls", help="list the instances of the record (the SQL index)")
    ls.add_argument("--project", default=None)
    ls.add_argument("--cell", default=None)
    parser("show", help="one instance's index row").add_argument("key")
    parser("explain", help="one instance's tree").add_argument("key")
    gc = parser("gc", help="delete unreachable or old instances (never held or reachable)")
    gc.add_argument("--dry-run", action="store_true", help="list what would be deleted")
    gc.add_argument("--older-than", default=None, help="ISO date or time (UTC if no zone)")
    gc.add_argument("-m", "--module", default=None, help="the code location's module")
    gc.add_argument("-a", "--attribute", default="defs")
    index = parser("index", help="the SQL index: rebuild it from the store")
    index.add_argument("action", choices=["rebuild"])


RECORD_COMMANDS = ("ls", "show", "explain", "gc", "index")


def record_command(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Run one of RECORD_COMMANDS; the exit code (2 with the message on a FurtherError)."""
    from further_dagster.engine import record
    from further_dagster.errors import FurtherError
    from further_dagster.store import ArtifactStore

    write = (out or sys.stdout).write
    try:
        store = ArtifactStore(args.root, index_url=args.index_url)
        if args.command == "ls":
            lines = record.ls_lines(store, args.project, args.cell)
        elif args.command == "show":
            lines = record.show_lines(store, args.key)
        elif args.command == "explain":
            lines = [record.explain(store, args.key).rstrip("\n")]
        elif args.command == "gc":
            lines = _gc(store, args)
        else:
            from further_dagster.store.index.rebuild import rebuild

            done = rebuild(record.index_url(store), str(store.root))
            lines = [
                f"rebuilt the index from {store.root}: {done.instances} instance(s), "
                f"{done.committed} stored, in {done.seconds:.1f} s"
            ]
    except FurtherError as exc:
        print(f"further-dagster {args.command}: {exc}", file=sys.stderr)
        return 2
    for line in lines:
        write(line + "\n")
    return 0


def _gc(store: Any, args: argparse.Namespace) -> list[str]:
    import datetime as dt

    from further_dagster.engine import record
    from further_dagster.errors import ConfigurationError

    older = None
    if args.older_than:
        try:
            older = dt.datetime.fromisoformat(args.older_than)
        except ValueError:
            raise ConfigurationError(
                f"--older-than {args.older_than!r} is not an ISO date or time "
                f"(e.g. 2026-11-30 or 2026-11-30T12:00)"
            ) from None
        older = older.replace(tzinfo=dt.UTC) if older.tzinfo is None else older
    if args.module is None and older is None:
        raise ConfigurationError("gc needs -m MODULE (its current definitions) or --older-than")
    roots = None
    if args.module is not None:
        location = _location(args.module, args.attribute)
        roots = list(location.actual_instances().values())
        if args.root is None:  # the code location's own root (build_definitions(root=...))
            from further_dagster.store import ArtifactStore

            store = ArtifactStore(location.store().root, index_url=args.index_url)
    done = record.collect(store, roots=roots, older_than=older, dry_run=args.dry_run)
    lines = [f"{outcome:<12} {label}" for label, outcome in done]
    deleted = sum(outcome == "deleted" for _, outcome in done)
    held = sum(outcome == "held" for _, outcome in done)
    verb = "would delete" if args.dry_run else "deleted"
    lines.append(
        f"{verb} {len(done) - held if args.dry_run else deleted} instance(s) under "
        f"{store.root}" + (f"; {held} skipped (lease held)" if held else "")
    )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="further-dagster",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    pr = sub.add_parser("partition-range", help="FIRST...LAST of the sweep's partitions")
    pr.add_argument("-m", "--module", required=True)
    pr.add_argument("-a", "--attribute", default="defs")
    _add_retry_command(sub)
    _add_verify_command(sub)
    _add_materialize_command(sub)
    _add_record_commands(sub)
    args = parser.parse_args(argv)
    if args.command in RECORD_COMMANDS:
        return record_command(args)
    if args.command == "materialize":
        return materialize(args.module, args.attribute, args.select, args.partition)
    if args.command == "verify":
        return verify(args.root, args.project, args.cell, quarantine=args.quarantine)
    if args.command == "retry":
        print(retry(args.root, args.target, args.key))
    if args.command == "partition-range":
        print(partition_range(args.module, args.attribute))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
