"""`further-dagster`: small helpers around the stock dagster CLI.

further-dagster partition-range -m example_project
    prints FIRST...LAST of the (one) partitions definition of the code location, for
    `dagster asset materialize --select '*' --partition-range "$(...)"`.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

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
    args = parser.parse_args(argv)
    if args.command == "partition-range":
        print(partition_range(args.module, args.attribute))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
