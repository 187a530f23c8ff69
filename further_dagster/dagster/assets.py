"""One software-defined asset per cell.

The asset body resolves the instances of the requested partition(s), computes those whose logic
key is not stored (and any missing upstream instance, so a partial selection still works), and
records metadata that says what happened: logic key, specs, artifact path, cache hit or miss,
make() duration, releases.
"""

import inspect
import json
import time
import warnings
from typing import Any

import dagster as dg

from further_dagster.core.instances import Instance, walk
from further_dagster.dagster.projection import CellAsset
from further_dagster.dagster.registry import TOKEN_TAG, Compiled, asset_key_for
from further_dagster.dagster.releases import resource_asset, run_freshness
from further_dagster.dagster.resources import IO_MANAGER_KEY, FurtherStore, StoredCell
from further_dagster.dagster.step_modes import step_mode, step_slurm_settings
from further_dagster.engine.compute import is_stored
from further_dagster.engine.modes import Mode
from further_dagster.engine.scheduler import RunReport, run_missing
from further_dagster.errors import FurtherError

KIND = "further"


def _description(asset: CellAsset) -> str:
    cell = asset.cell
    doc = inspect.getdoc(cell) or f"Cell {cell.full_name}."
    if inspect.getdoc(cell) == inspect.getdoc(cell.__mro__[1]):
        doc = f"Cell {cell.full_name}."
    lines = [doc, "", f"Contributions: {', '.join(cell.contributions)}."]
    if asset.partitions is not None:
        lines += ["", "| partition | instance |", "|---|---|"]
        lines += [
            f"| `{k}` | {asset.partitions.labels.get(k, '')} |" for k in asset.partitions.keys
        ]
    return "\n".join(lines)


def _partitions_defs(compiled: Compiled) -> dict[str, dg.StaticPartitionsDefinition]:
    defs: dict[str, dg.StaticPartitionsDefinition] = {}
    for asset in compiled.projection.assets.values():
        if asset.cell.is_resource:
            continue
        if asset.partitions is not None and asset.partitions.name not in defs:
            defs[asset.partitions.name] = dg.StaticPartitionsDefinition(asset.partitions.keys)
    return defs


def instance_metadata(store_root: Any, inst: Instance, hit: bool, seconds: float) -> dict[str, Any]:
    path = store_root / inst.cell.project.name / inst.cell.name / inst.key
    meta: dict[str, Any] = {
        "further/logic_key": inst.key,
        "further/cache": "hit" if hit else "miss",
        "further/specs": dg.MetadataValue.json(inst.specs.model_dump(mode="json")),
        "further/artifact_path": dg.MetadataValue.path(str(path)),
        "further/make_seconds": float(round(seconds, 4)),
    }
    releases = inst.releases()
    if releases:
        meta["further/releases"] = dg.MetadataValue.json(releases)
    return meta


def _materialize(
    context: dg.AssetExecutionContext, further: FurtherStore, compiled: Compiled, asset: CellAsset
) -> dg.Output[StoredCell]:
    key = asset_key_for(asset.cell)
    pks = list(context.partition_keys) if asset.partitions is not None else None
    try:
        freshness = run_freshness(compiled, context.run.tags, further.freshness)
        by_partition = compiled.instances_for(key, pks, freshness=freshness)
    except FurtherError as exc:
        raise dg.Failure(
            description=str(exc), metadata={"further/cell": asset.cell.full_name}
        ) from exc
    mine = [inst for insts in by_partition.values() for inst in insts]
    store = further.store()
    before = {inst.key: is_stored(store, inst) for inst in walk(mine)}
    missing = [inst for inst in walk(mine) if not before[inst.key]]
    upstream_missing = [i for i in missing if i.cell is not asset.cell and not i.cell.is_resource]
    if upstream_missing:
        context.log.warning(
            f"{len(upstream_missing)} upstream instance(s) were not stored and are computed in "
            f"this step: {', '.join(i.label for i in upstream_missing[:5])}"
        )
    for inst in missing:
        if inst.cell.is_resource:
            context.log.info(f"reading resource {inst.label} at release {inst.release}")
    report = RunReport()
    started = time.perf_counter()
    try:
        run_missing(
            store,
            missing,
            mode=(mode := step_mode(context, further.mode)),
            max_workers=further.max_workers,
            slurm=step_slurm_settings(context) if mode is Mode.SLURM else None,
            report=report,
        )
    except FurtherError as exc:
        raise dg.Failure(
            description=str(exc),
            metadata={
                "further/cell": asset.cell.full_name,
                "further/traceback": dg.MetadataValue.text(
                    getattr(exc, "remote_traceback", "") or ""
                ),
            },
        ) from exc
    total = time.perf_counter() - started
    outcomes = report.outcomes
    if len(mine) == 1:
        inst = mine[0]
        outcome = outcomes.get(inst.key)
        hit = before[inst.key] or (outcome is not None and outcome.hit)
        metadata = instance_metadata(store.root, inst, hit, outcome.duration_s if outcome else 0.0)
        data_version = dg.DataVersion(inst.key)
    else:
        rows: list[dict[str, Any]] = []
        for pk, insts in by_partition.items():
            for inst in insts:
                outcome = outcomes.get(inst.key)
                rows.append(
                    {
                        "partition": pk,
                        "logic_key": inst.key,
                        "cache": "hit" if before[inst.key] or (outcome and outcome.hit) else "miss",
                        "make_seconds": round(outcome.duration_s, 4) if outcome else 0.0,
                        "specs": inst.specs.model_dump(mode="json"),
                    }
                )
        hits = sum(r["cache"] == "hit" for r in rows)
        metadata = {
            "further/instances": dg.MetadataValue.json(rows),
            "further/cache": "hit" if hits == len(rows) else f"{len(rows) - hits} miss, {hits} hit",
            "further/make_seconds": float(round(sum(r["make_seconds"] for r in rows), 4)),
            "further/artifact_path": dg.MetadataValue.path(
                str(store.root / asset.cell.project.name / asset.cell.name)
            ),
        }
        data_version = None
    metadata["further/step_seconds"] = float(round(total, 4))
    if report.computed:
        context.log.info(f"{asset.cell.full_name}: {report.summary()}")
    keys = {pk: [i.key for i in insts] for pk, insts in by_partition.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)  # data_version is "beta" in 1.13
        return dg.Output(
            StoredCell(key.to_user_string(), keys), metadata=metadata, data_version=data_version
        )


def cell_asset(
    compiled: Compiled,
    asset: CellAsset,
    partitions_defs: dict[str, dg.StaticPartitionsDefinition],
    backfill_policy: dg.BackfillPolicy | None,
) -> dg.AssetsDefinition:
    cell = asset.cell
    deps = []
    for up_cell, mapping in asset.upstream.items():
        up_key = asset_key_for(up_cell)
        if mapping is None:
            deps.append(dg.AssetDep(up_key))
        else:
            deps.append(
                dg.AssetDep(
                    up_key,
                    partition_mapping=dg.StaticPartitionMapping(
                        {k: v for k, v in mapping.items() if v}
                    ),
                )
            )
    partitions_def = partitions_defs[asset.partitions.name] if asset.partitions else None
    op_tags: dict[str, Any] = {"further/cell": cell.full_name, TOKEN_TAG: compiled.token}
    if cell.slurm is not None:
        op_tags["further/slurm"] = json.dumps(_slurm_json(cell.slurm))

    @dg.asset(
        key=asset_key_for(cell),
        group_name=cell.project.name,
        code_version=str(cell.logic_version),
        description=_description(asset),
        deps=deps,
        partitions_def=partitions_def,
        backfill_policy=backfill_policy,
        io_manager_key=IO_MANAGER_KEY,
        kinds={KIND},
        op_tags=op_tags,
        metadata={
            "further/cell": cell.full_name,
            TOKEN_TAG: compiled.token,
            "further/logic_version": str(cell.logic_version),
            "further/api_version": str(cell.api_version),
            "further/contributions": ", ".join(cell.contributions),
            "further/spec_defaults": dg.MetadataValue.json(
                json.loads(cell.Specs.model_construct().model_dump_json())
                if not cell.Specs.model_fields
                or all(not f.is_required() for f in cell.Specs.model_fields.values())
                else {}
            ),
        },
    )
    def _asset(context: dg.AssetExecutionContext, further: FurtherStore) -> dg.Output[StoredCell]:
        return _materialize(context, further, compiled, asset)

    return _asset


def _slurm_json(spec: Any) -> Any:
    if isinstance(spec, (list, tuple)):
        return [_slurm_json(s) for s in spec]
    dump = getattr(spec, "model_dump", None)
    return dump(mode="json") if dump else spec


def build_cell_assets(compiled: Compiled, backfill_policy: dg.BackfillPolicy | None) -> list[Any]:
    """One asset per cell: a materializable asset, or an observable source asset for a
    resource cell."""
    defs = _partitions_defs(compiled)
    with warnings.catch_warnings():
        # BackfillPolicy is "beta" in Dagster 1.13; the warning would repeat for every cell.
        warnings.simplefilter("ignore", dg.BetaWarning)
        return [
            resource_asset(compiled, a)
            if a.cell.is_resource
            else cell_asset(compiled, a, defs, backfill_policy)
            for a in compiled.projection.assets.values()
        ]
