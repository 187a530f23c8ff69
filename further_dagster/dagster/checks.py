"""Asset checks shipped by build_definitions: what the store holds is what was committed, and a
resource cell's last observation is within its shelf life.

* `stored_result_intact`, on every cell asset: every instance of the asset (every partition,
  under the run's freshness) is audited by the store (`ArtifactStore.audit`: manifest, sizes and
  blake2b digests). Damage fails the check with severity ERROR; an instance that is not stored
  is reported as missing (severity WARN), never as damage.
* `release_within_shelf_life`, on every resource cell whose freshness is `current(shelf_life)`:
  the age of its latest observation (Dagster's latest observation of the resource asset, or the
  store's release history, whichever is newer) is within the shelf life.

The checks of a code location are `multi_asset_check`s (ops with `can_subset`) of up to
`CHECKS_PER_OP` assets each, the first named `<projects>__further_checks`: one node in the asset
job per `CHECKS_PER_OP` assets instead of one per asset, which would double the job's nodes and
its load time. Not a single op for thousands: Dagster's asset-job build compares every input of
an op with every check key of that op, so one op's cost grows with the square of its checks.
No check is blocking. Under the code location's executor (the skip-cached one) the check step
is never started (no process, no Slurm job) when the executor can evaluate every check it holds
(`executor_checks`): the intact check of a cached asset at once, that of a computed asset once
its step succeeded, `release_within_shelf_life` in-process (it reads records only). Each such
evaluation carries `further/checked_by_executor`. A run of only the checks (the UI's "Execute" on
a check) runs the check step as a plain Dagster step.

Digests: a computed asset and a run of only the checks compare digests. A cached asset compares
what every load compares (`FURTHER_VERIFY`: digests by default); under `FURTHER_VERIFY=size` it
still compares digests while they are cheap (up to `CHEAP_DIGEST_BYTES` of recorded file sizes
per evaluation), sizes beyond. Metadata `digests_checked` says which.
"""

import datetime as dt
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import dagster as dg

from further_dagster.core.cell import Cell
from further_dagster.core.freshness import Current, FreshnessOverrides
from further_dagster.core.instances import Instance
from further_dagster.dagster.location import Location, asset_key_for
from further_dagster.dagster.run_config import run_freshness
from further_dagster.errors import FurtherError
from further_dagster.store import ArtifactStore, ReleaseHistory, Store

INTACT = "stored_result_intact"
SHELF_LIFE = "release_within_shelf_life"
CHECK_NAMES = (INTACT, SHELF_LIFE)
OP_SUFFIX = "further_checks"
CHECKS_PER_OP = 100
"""Checks per check op: small code locations keep one op; for a 1,000-cell chain ten ops instead
of one take Dagster's repository build and snapshot from 1.16 to 1.03 s (in-process medians)."""

# metadata keys of the evaluations
CHECKED = "checked"
DAMAGED = "damaged"
MISSING = "missing"
DIGESTS = "digests_checked"
AGE = "age_seconds"
SHELF = "shelf_life_seconds"
OBSERVED_AT = "observed_at"
OBSERVED_BY = "observed_by"

CHEAP_DIGEST_BYTES = 64 << 20
"""Under FURTHER_VERIFY=size, the bytes a cached asset's intact check still digests (about 0.1 s
of blake2b); results beyond get the size checks."""

# The clock of the shelf-life check (seconds since the epoch); tests replace it.
now: Callable[[], float] = time.time

# check step key -> the check keys the executor evaluates now / after (asset step, check key)
NowChecks = dict[str, list[dg.AssetCheckKey]]
AfterChecks = dict[str, list[tuple[str, dg.AssetCheckKey]]]


def _label(pk: str | None, inst: Instance, several: bool) -> str:
    if pk is None:
        return inst.label
    return f"{pk}: {inst.label}" if several else pk


class _DigestBudget:
    """Whether to digest the next stored result: always (`digest` True, or the store's verify
    mode is digest), never (False with a store that cannot audit), or while the recorded sizes
    read so far stay within CHEAP_DIGEST_BYTES (None under FURTHER_VERIFY=size)."""

    def __init__(self, store: Store, digest: bool | None) -> None:
        self.store = store if isinstance(store, ArtifactStore) else None
        auto = digest is None and self.store is not None and self.store.verify == "digest"
        self.always = self.store is not None and (digest is True or auto)
        self.cheap = digest is None and self.store is not None and not self.always
        self.left = CHEAP_DIGEST_BYTES
        self.all_digested = self.store is not None and digest is not False

    def take(self, project: str, cell: str, key: str) -> bool:
        if self.always:
            return True
        if not self.cheap or self.store is None:
            return False
        try:
            manifest = self.store.read_manifest(project, cell, key)
        except (FurtherError, OSError):
            return True  # the audit reports what is wrong with it
        size = sum(e.size or 0 for e in manifest.contributions.values())
        if size > self.left:
            self.cheap = False
            return False
        self.left -= size
        return True


def intact_evaluation(
    location: Location,
    by_pk: Mapping[str | None, Sequence[Instance]],
    *,
    digest: bool | None = True,
) -> tuple[bool, dg.AssetCheckSeverity, dict[str, Any], str]:
    """(passed, severity, metadata, description) of `stored_result_intact` over these instances
    (partition key -> instances). `digest`: True compares digests, False only the cheap checks
    (`is_intact`: sizes, no file read), None follows the store's verify mode, digesting under
    `size` while cheap (see the module docstring)."""
    store = location.store()
    budget = _DigestBudget(store, digest)
    damaged: dict[str, str] = {}
    missing: list[str] = []
    checked = 0
    for pk, insts in by_pk.items():
        for inst in insts:
            checked += 1
            project, name = inst.cell.project.name, inst.cell.name
            label = _label(pk, inst, len(insts) > 1)
            if not store.is_stored(project, name, inst.key):
                missing.append(label)
                continue
            if budget.store is not None and budget.take(project, name, inst.key):
                problem = budget.store.audit(project, name, inst.key, digest=True).problem
            elif store.is_intact(project, name, inst.key):
                budget.all_digested = False
                problem = None
            else:
                budget.all_digested = False
                problem = "fails the store's cheap checks (manifest, sizes)"
            if problem is not None:
                damaged[label] = problem
    passed = not damaged and not missing
    severity = dg.AssetCheckSeverity.ERROR if damaged else dg.AssetCheckSeverity.WARN
    metadata: dict[str, Any] = {
        CHECKED: checked,
        DAMAGED: dg.MetadataValue.json(damaged),
        MISSING: dg.MetadataValue.json(missing),
        DIGESTS: budget.all_digested,
    }
    if damaged:
        description = f"{len(damaged)} of {checked} stored result(s) damaged"
    elif missing:
        description = f"{len(missing)} of {checked} instance(s) not stored"
    else:
        description = f"{checked} stored result(s) intact"
    return passed, severity, metadata, description


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


def check_specs(location: Location) -> list[dg.AssetCheckSpec]:
    """The specs of the location's checks (see the module docstring)."""
    specs = []
    for cell in location.projection.assets:
        if not cell.is_resource:
            specs.append(
                dg.AssetCheckSpec(
                    INTACT,
                    asset=asset_key_for(cell),
                    blocking=False,
                    description="Every instance of the asset (every partition) is stored, and "
                    "its files have the sizes and blake2b digests its manifest recorded. "
                    "Damage: ERROR; not stored: WARN.",
                )
            )
        elif shelf_life_of(cell, location.default_freshness) is not None:
            specs.append(
                dg.AssetCheckSpec(
                    SHELF_LIFE,
                    asset=asset_key_for(cell),
                    blocking=False,
                    description="The latest observation of this resource cell is within the "
                    "shelf life of its `current(shelf_life)` freshness.",
                )
            )
    return specs


def _results(
    location: Location, context: dg.AssetCheckExecutionContext
) -> Iterator[dg.AssetCheckResult]:
    """The check step's body: every selected check, intact ones with digests."""
    run = context.run
    keys = sorted(context.selected_asset_check_keys, key=lambda k: k.to_user_string())
    try:
        freshness = run_freshness(location, run.tags, run.run_config)
        actual: Mapping[str, Instance] = {}
        if any(k.name == INTACT for k in keys):
            releases = location.release_resolver(freshness) if location.has_resources else None
            actual = location.actual_instances(resolver=releases)
    except FurtherError as exc:
        for key in keys:
            yield dg.AssetCheckResult(
                asset_key=key.asset_key,
                check_name=key.name,
                passed=False,
                severity=dg.AssetCheckSeverity.ERROR,
                description=str(exc),
            )
        return
    for key in keys:
        if key.name == INTACT:
            by_pk = location.instances_for(key.asset_key, None, actual)
            passed, severity, metadata, description = intact_evaluation(location, by_pk)
        else:
            cell = location.asset_by_key[key.asset_key].cell
            passed, metadata, description = shelf_life_evaluation(
                location, cell, context.instance, freshness
            )
            severity = dg.AssetCheckSeverity.WARN
        yield dg.AssetCheckResult(
            asset_key=key.asset_key,
            check_name=key.name,
            passed=passed,
            severity=severity,
            metadata=metadata,
            description=description,
        )


def build_checks(location: Location) -> list[dg.AssetChecksDefinition]:
    """The asset checks of a code location: multi-asset checks of up to CHECKS_PER_OP specs
    each (one for a location of up to CHECKS_PER_OP cell assets)."""
    specs = check_specs(location)
    projects = sorted({c.project.name for c in location.projection.assets})
    ops = []
    for n, start in enumerate(range(0, len(specs), CHECKS_PER_OP), start=1):
        part = [f"part{n}"] if n > 1 else []  # ..., "<projects>__part2__further_checks"
        name = "__".join([*projects, *part, OP_SUFFIX])
        ops.append(_checks_op(location, name, specs[start : start + CHECKS_PER_OP]))
    return ops


def _checks_op(
    location: Location, name: str, specs: Sequence[dg.AssetCheckSpec]
) -> dg.AssetChecksDefinition:
    @dg.multi_asset_check(
        name=name,
        specs=specs,
        can_subset=True,
        description="The further_dagster checks of this code location: stored_result_intact "
        "on every cell asset, release_within_shelf_life on resource cells with a shelf life.",
    )
    def _checks(context: dg.AssetCheckExecutionContext) -> Iterator[dg.AssetCheckResult]:
        yield from _results(location, context)

    return _checks


def executor_checks(
    location: Location,
    check_keys: Mapping[str, Sequence[dg.AssetCheckKey]],
    asset_keys: Mapping[str, Sequence[dg.AssetKey]],
    cached_assets: set[dg.AssetKey],
) -> tuple[NowChecks, AfterChecks]:
    """The check steps of a run (step key -> its check keys) the skip-cached executor evaluates
    itself instead of starting them: (now, after). Now: the intact check of a cached asset and
    every shelf-life check. After (check step -> [(the asset's step, check key)]): the intact
    check of an asset whose step runs in this run, once that step succeeded. A check step with
    a check of another code location or kind, or of an asset not in the run, is left to run."""
    step_of = {key: step for step, keys in asset_keys.items() for key in keys}
    now: NowChecks = {}
    after: AfterChecks = {}
    for step_key, keys in check_keys.items():
        here: list[dg.AssetCheckKey] = []
        later: list[tuple[str, dg.AssetCheckKey]] = []
        for key in keys:
            asset = location.asset_by_key.get(key.asset_key)
            if asset is None:
                break
            if key.name == SHELF_LIFE and asset.cell.is_resource:
                here.append(key)
            elif key.name == INTACT and not asset.cell.is_resource:
                if key.asset_key in cached_assets:
                    here.append(key)
                elif key.asset_key in step_of:
                    later.append((step_of[key.asset_key], key))
                else:
                    break
            else:
                break
        else:
            if here:
                now[step_key] = here
            if later:
                after[step_key] = later
    return now, after


__all__ = [
    "CHECK_NAMES",
    "INTACT",
    "SHELF_LIFE",
    "build_checks",
    "check_specs",
    "executor_checks",
    "intact_evaluation",
    "shelf_life_evaluation",
    "shelf_life_of",
]
