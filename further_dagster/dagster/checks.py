"""Asset checks shipped by build_definitions: what the store holds is what was committed, and a
resource cell's last observation is within its shelf life.

* `stored_result_intact`, on every cell asset: every instance of the asset (every partition,
  under the run's freshness) is audited by the store (`ArtifactStore.audit`: manifest, sizes and
  blake2b digests). Damage fails the check with severity ERROR; an instance that is not stored
  is reported as missing (severity WARN), never as damage.
* `release_within_shelf_life`, on every resource cell whose freshness is `current(shelf_life)`:
  the age of its latest observation (Dagster's latest observation of the resource asset, or the
  store's release history, whichever is newer) is within the shelf life.

No check is blocking. Under the code location's executor (the skip-cached one) no check step
is ever started (no process, no Slurm job): it evaluates `stored_result_intact` itself, for a
cached asset with the cheap checks its planning just made (`is_intact`: sizes, no digest;
metadata `digests_checked: false`) and for a computed asset with the full audit once its step
succeeded; and `release_within_shelf_life` in-process (it reads records only). Each evaluation
carries `further/checked_by_executor`. A run of only the checks (the UI's "Execute" on a check)
runs the intact check's step as a plain Dagster step, with digests.
"""

import datetime as dt
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import dagster as dg

from further_dagster.core.cell import Cell
from further_dagster.core.freshness import Current, FreshnessOverrides
from further_dagster.core.instances import Instance
from further_dagster.dagster.location import Location, asset_key_for
from further_dagster.dagster.run_config import run_freshness
from further_dagster.errors import FurtherError
from further_dagster.store import ArtifactStore, ReleaseHistory

INTACT = "stored_result_intact"
SHELF_LIFE = "release_within_shelf_life"
CHECK_NAMES = (INTACT, SHELF_LIFE)

# metadata keys of the evaluations
CHECKED = "checked"
DAMAGED = "damaged"
MISSING = "missing"
DIGESTS = "digests_checked"
AGE = "age_seconds"
SHELF = "shelf_life_seconds"
OBSERVED_AT = "observed_at"
OBSERVED_BY = "observed_by"

# The clock of the shelf-life check (seconds since the epoch); tests replace it.
now: Callable[[], float] = time.time


def _label(pk: str | None, inst: Instance, several: bool) -> str:
    if pk is None:
        return inst.label
    return f"{pk}: {inst.label}" if several else pk


def intact_evaluation(
    location: Location,
    by_pk: Mapping[str | None, Sequence[Instance]],
    *,
    digest: bool = True,
) -> tuple[bool, dg.AssetCheckSeverity, dict[str, Any], str]:
    """(passed, severity, metadata, description) of `stored_result_intact` over these instances
    (partition key -> instances). `digest=False` uses `is_intact` (sizes only, no file read)."""
    store = location.store()
    damaged: dict[str, str] = {}
    missing: list[str] = []
    checked = 0
    for pk, insts in by_pk.items():
        for inst in insts:
            checked += 1
            cell = inst.cell
            label = _label(pk, inst, len(insts) > 1)
            if not store.is_stored(cell.project.name, cell.name, inst.key):
                missing.append(label)
                continue
            if digest and isinstance(store, ArtifactStore):
                problem = store.audit(cell.project.name, cell.name, inst.key, digest=True).problem
            elif store.is_intact(cell.project.name, cell.name, inst.key):
                problem = None
            else:
                problem = "fails the store's cheap checks (manifest, sizes)"
            if problem is not None:
                damaged[label] = problem
    passed = not damaged and not missing
    severity = dg.AssetCheckSeverity.ERROR if damaged else dg.AssetCheckSeverity.WARN
    metadata: dict[str, Any] = {
        CHECKED: checked,
        DAMAGED: dg.MetadataValue.json(damaged),
        MISSING: dg.MetadataValue.json(missing),
        DIGESTS: digest and isinstance(store, ArtifactStore),
    }
    if damaged:
        description = f"{len(damaged)} of {checked} stored result(s) damaged"
    elif missing:
        description = f"{len(missing)} of {checked} instance(s) not stored"
    else:
        description = f"{checked} stored result(s) intact"
    return passed, severity, metadata, description


def _run_instances(
    location: Location, key: dg.AssetKey, tags: Mapping[str, str], run_config: Any
) -> dict[str | None, list[Instance]]:
    releases = None
    if location.has_resources:
        releases = location.release_resolver(run_freshness(location, tags, run_config))
    actual = location.actual_instances(resolver=releases)
    return location.instances_for(key, None, actual)


def _intact_check(location: Location, key: dg.AssetKey) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=key,
        name=INTACT,
        blocking=False,
        description="Every instance of the asset (every partition) is stored, and its files "
        "have the sizes and blake2b digests its manifest recorded. Damage: ERROR; "
        "not stored: WARN.",
    )
    def _check(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        run = context.run
        try:
            by_pk = _run_instances(location, key, run.tags, run.run_config)
        except FurtherError as exc:
            return dg.AssetCheckResult(
                passed=False, severity=dg.AssetCheckSeverity.ERROR, description=str(exc)
            )
        passed, severity, metadata, description = intact_evaluation(location, by_pk)
        return dg.AssetCheckResult(
            passed=passed, severity=severity, metadata=metadata, description=description
        )

    return _check


def shelf_life_of(cell: type[Cell], freshness: FreshnessOverrides) -> dt.timedelta | None:
    """The shelf life of resource cell `cell` under `freshness` (None unless `current`)."""
    policy = freshness.policy_for(cell)
    return policy.shelf_life if isinstance(policy, Current) else None


def _latest_observation(
    location: Location, cell: type[Cell], instance: dg.DagsterInstance
) -> tuple[float | None, str]:
    """(timestamp, where) of the latest observation of a resource asset: Dagster's latest
    observation record, or the store's release history (the oldest of each instance's latest,
    so that every instance is within), whichever is newer."""
    found: list[tuple[float, str]] = []
    record = instance.get_latest_data_version_record(asset_key_for(cell), is_source=True)
    if record is not None:
        found.append((float(record.event_log_entry.timestamp), "dagster"))
    asset = location.projection.assets.get(cell)
    if asset is not None:
        history = ReleaseHistory(location.store().root)
        latest: list[float] = []
        for inst in asset.instances.get(None, []):
            seen = history.read(cell.project.name, cell.name, inst.skey)
            if not seen:
                latest = []
                break
            latest.append(seen[-1].observed_at.timestamp())
        if latest:
            found.append((min(latest), "release history"))
    if not found:
        return None, "never observed"
    return max(found)


def shelf_life_evaluation(
    location: Location,
    cell: type[Cell],
    instance: dg.DagsterInstance,
    freshness: FreshnessOverrides,
) -> tuple[bool, dict[str, Any], str]:
    """(passed, metadata, description) of `release_within_shelf_life` for `cell`."""
    shelf = shelf_life_of(cell, freshness) or shelf_life_of(cell, location.default_freshness)
    if shelf is None:
        return True, {}, f"{cell.full_name} has no shelf life under this run's freshness"
    stamp, where = _latest_observation(location, cell, instance)
    limit = shelf.total_seconds()
    metadata: dict[str, Any] = {SHELF: float(limit), OBSERVED_BY: where}
    if stamp is None:
        return False, metadata, f"{cell.full_name} was never observed"
    age = max(0.0, now() - stamp)
    metadata[AGE] = float(round(age, 3))
    metadata[OBSERVED_AT] = dt.datetime.fromtimestamp(stamp, dt.UTC).isoformat()
    passed = age <= limit
    verb = "within" if passed else "older than"
    return passed, metadata, f"last observed {age:.0f} s ago ({where}), {verb} {limit:g} s"


def _shelf_life_check(location: Location, cell: type[Cell]) -> dg.AssetChecksDefinition:
    key = asset_key_for(cell)

    @dg.asset_check(
        asset=key,
        name=SHELF_LIFE,
        blocking=False,
        description="The latest observation of this resource cell is within the shelf life "
        "of its `current(shelf_life)` freshness.",
    )
    def _check(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        run = context.run
        try:
            freshness = run_freshness(location, run.tags, run.run_config)
        except FurtherError as exc:
            return dg.AssetCheckResult(passed=False, description=str(exc))
        passed, metadata, description = shelf_life_evaluation(
            location, cell, context.instance, freshness
        )
        return dg.AssetCheckResult(
            passed=passed,
            severity=dg.AssetCheckSeverity.WARN,
            metadata=metadata,
            description=description,
        )

    return _check


def build_checks(location: Location) -> list[dg.AssetChecksDefinition]:
    """The asset checks of a code location (see the module docstring)."""
    out: list[dg.AssetChecksDefinition] = []
    for cell in location.projection.assets:
        if not cell.is_resource:
            out.append(_intact_check(location, asset_key_for(cell)))
        elif shelf_life_of(cell, location.default_freshness) is not None:
            out.append(_shelf_life_check(location, cell))
    return out


__all__ = [
    "CHECK_NAMES",
    "INTACT",
    "SHELF_LIFE",
    "build_checks",
    "intact_evaluation",
    "shelf_life_evaluation",
    "shelf_life_of",
]
