"""One software-defined asset per cell.

The asset body resolves the instances of the requested partition(s), computes those that are
missing (engine/plan.py: its own instances and any missing upstream instance they need, so a
partial selection still works), and records metadata that says what happened: logic key, specs,
artifact path, cache hit or miss, make() duration, releases.
"""

import inspect
import json
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dagster as dg

from further_dagster.core.instances import Instance
from further_dagster.dagster import tags as T
from further_dagster.dagster.location import (
    IO_MANAGER_KEY,
    RESOURCE_KEY,
    Location,
    StepInstances,
    asset_key_for,
)
from further_dagster.dagster.resources import FurtherResource, StoredCell
from further_dagster.dagster.run_config import run_freshness, step_mode
from further_dagster.dagster.runtime_children import record_runtime_children
from further_dagster.dagster.specs_config import SchemaCache
from further_dagster.dagster.versions import input_tags, version_tags
from further_dagster.dagster.waves import wave_report
from further_dagster.engine.modes import Mode
from further_dagster.engine.projection import CellAsset
from further_dagster.engine.scheduler import RunReport, run_missing
from further_dagster.errors import FurtherError

DESCRIBED_PARTITIONS = 50  # rows of the partition table in an asset's description


class _Shared:
    """What the assets of one build share: config fields of alike schemas (specs_config.py),
    metadata values that repeat (versions, contributions: one object for all the assets that
    show the same text), the docstrings of base classes."""

    def __init__(self) -> None:
        self.schemas = SchemaCache()
        self._texts: dict[str, dg.TextMetadataValue] = {}
        self._docs: dict[type, str | None] = {}

    def text(self, value: str) -> dg.TextMetadataValue:
        found = self._texts.get(value)
        if found is None:
            found = self._texts[value] = dg.MetadataValue.text(value)
        return found

    def doc(self, cls: type) -> str | None:
        if cls not in self._docs:
            self._docs[cls] = inspect.getdoc(cls)
        return self._docs[cls]


def _description(asset: CellAsset, shared: _Shared) -> str:
    cell = asset.cell
    doc = inspect.getdoc(cell)
    if not doc or doc == shared.doc(cell.__mro__[1]):
        doc = f"Cell {cell.full_name}."
    lines = [doc, "", f"Contributions: {', '.join(cell.contributions)}."]
    if asset.partitions is not None:
        # the first rows only: the description travels in every snapshot of the code location,
        # and the partitions page lists them all
        keys = asset.partitions.keys
        lines += ["", "| partition | instance |", "|---|---|"]
        lines += [
            f"| `{k}` | {asset.partitions.labels.get(k, '')} |" for k in keys[:DESCRIBED_PARTITIONS]
        ]
        if len(keys) > DESCRIBED_PARTITIONS:
            lines.append(f"| ... | {len(keys) - DESCRIBED_PARTITIONS} more partition(s) |")
    return "\n".join(lines)


def partitions_defs(location: Location) -> dict[str, dg.StaticPartitionsDefinition]:
    """One StaticPartitionsDefinition per partition set of the projection."""
    defs: dict[str, dg.StaticPartitionsDefinition] = {}
    for asset in location.projection.assets.values():
        if asset.cell.is_resource:
            continue
        if asset.partitions is not None and asset.partitions.name not in defs:
            defs[asset.partitions.name] = dg.StaticPartitionsDefinition(asset.partitions.keys)
    return defs


def instance_metadata(
    store_root: Path, inst: Instance, hit: bool, seconds: float, index_url: str | None = None
) -> dict[str, Any]:
    """The metadata of one instance's materialization (computed or cached); `index_url`: the
    store's SQL index (`store.index_url`), linked by `further/index` when there is one."""
    path = store_root / inst.cell.project.name / inst.cell.name / inst.key
    meta: dict[str, Any] = {
        T.LOGIC_KEY: inst.key,
        T.CACHE: "hit" if hit else "miss",
        T.SPECS: dg.MetadataValue.json(inst.specs.model_dump(mode="json")),
        T.ARTIFACT_PATH: dg.MetadataValue.path(str(path)),
        T.MAKE_SECONDS: float(round(seconds, 4)),
    }
    releases = inst.releases()
    if releases:
        meta[T.RELEASES] = dg.MetadataValue.json(releases)
    if inst.increment:
        meta[T.INCREMENTS] = inst.increment
    meta.update(T.index_link(index_url, inst.key))
    return meta


def _failure(asset: CellAsset, exc: FurtherError) -> dg.Failure:
    return dg.Failure(
        description=str(exc),
        metadata={
            T.CELL_TAG: asset.cell.full_name,
            T.TRACEBACK: dg.MetadataValue.text(getattr(exc, "remote_traceback", "") or ""),
        },
    )


def _step_instances(
    context: dg.AssetExecutionContext, location: Location, asset: CellAsset
) -> StepInstances:
    key = asset_key_for(asset.cell)
    pks = list(context.partition_keys) if asset.partitions is not None else None
    run = context.run
    releases = None
    if location.has_resources:
        releases = location.release_resolver(run_freshness(location, run.tags, run.run_config))
    config = dict(context.op_execution_context.op_config or {})
    return location.step_instances(
        {key: pks},
        location.actual_instances(resolver=releases),
        config={key: config} if config else None,
        releases=releases,
        tags=run.tags,
    )


def _compute(
    context: dg.AssetExecutionContext,
    further: FurtherResource,
    asset: CellAsset,
    step: StepInstances,
    report: RunReport | None = None,
) -> RunReport:
    """Run what the step is missing, in the step's mode; log what was not expected here."""
    upstream = [i for i in step.missing if i.cell is not asset.cell and not i.cell.is_resource]
    if upstream:
        context.log.warning(
            f"{len(upstream)} upstream instance(s) were not stored and are computed in this "
            f"step (each is recorded as a materialization of its own asset): "
            + ", ".join(i.label for i in upstream)
        )
    for inst in step.missing:
        if inst.cell.is_resource:
            context.log.info(f"reading resource {inst.label} at release {inst.release}")
    location = further.location
    step_key = context.get_step_execution_context().step.key
    mode = step_mode(location, context.run, step_key, context.job_def, further.within_step)
    slurm = None
    if mode is Mode.SLURM:
        from further_dagster.dagster.slurm_step_handler import fanout_settings

        slurm = fanout_settings(context, location)
    report = report if report is not None else RunReport()
    run_missing(
        location.store(),
        step.missing,
        mode=mode,
        max_workers=further.max_workers,
        slurm=slurm,
        report=report,
    )
    _record_upstream(context, location, upstream, report)
    return report


def _record_upstream(
    context: dg.AssetExecutionContext,
    location: Location,
    upstream: list[Instance],
    report: RunReport,
) -> None:
    """A materialization of its own asset (and partition) for each upstream instance this step
    computed, with its metadata and versions, so Dagster shows that work where it belongs."""
    root = location.store().root
    index_url = getattr(location.store(), "index_url", None)
    for inst in upstream:
        outcome = report.outcomes.get(inst.key)
        cell_asset = location.projection.assets.get(inst.cell)
        if outcome is None or cell_asset is None:
            continue
        partition = next(
            (
                pk
                for pk, insts in cell_asset.instances.items()
                for i in insts
                if i.skey == inst.skey
            ),
            None,
        )
        if cell_asset.partitions is not None and partition is None:
            context.log.info(f"{inst.label} is not a partition of its asset; not recorded there")
            continue
        metadata = instance_metadata(root, inst, outcome.hit, outcome.duration_s, index_url)
        metadata[T.COMPUTED_BY_STEP] = context.get_step_execution_context().step.key
        inputs = input_tags(context.instance, cell_asset.upstream)
        context.log_event(
            dg.AssetMaterialization(
                asset_key=asset_key_for(inst.cell),
                partition=partition,
                metadata=metadata,
                tags=version_tags(inst, inputs),
            )
        )


def _output(
    context: dg.AssetExecutionContext,
    location: Location,
    asset: CellAsset,
    step: StepInstances,
    report: RunReport,
    seconds: float,
) -> dg.Output[StoredCell]:
    """The step's output: a reference to the stored instances, with what happened to them;
    each partition of a multi-partition step gets its own metadata."""
    key = asset_key_for(asset.cell)
    by_partition = step.by_asset[key]
    fresh = {i.key for i in step.missing}
    root = location.store().root
    index_url = getattr(location.store(), "index_url", None)
    mine = [inst for insts in by_partition.values() for inst in insts]

    def hit(inst: Instance) -> bool:
        outcome = report.outcomes.get(inst.key)
        if outcome is not None:  # computed by this step, or for it by the run's waves
            return outcome.hit
        return inst.key not in fresh

    def seconds_of(inst: Instance) -> float:
        outcome = report.outcomes.get(inst.key)
        return outcome.duration_s if outcome is not None else 0.0

    data_version = None
    if len(mine) == 1:
        (inst,) = mine
        metadata = instance_metadata(root, inst, hit(inst), seconds_of(inst), index_url)
        data_version = dg.DataVersion(inst.key)
    else:
        # One materialization per partition, each with its own instance's metadata; what is
        # shared is about the step.
        hits = 0
        for pk, insts in by_partition.items():
            for inst in insts:
                hits += hit(inst)
                own = instance_metadata(root, inst, hit(inst), seconds_of(inst), index_url)
                context.add_asset_metadata(own, partition_key=pk)
        metadata = {T.STEP_INSTANCES: len(mine), T.STEP_HITS: hits}
    metadata[T.STEP_SECONDS] = float(round(seconds, 4))
    if step.labels.get(key):
        metadata[T.LABELS] = dg.MetadataValue.json(list(step.labels[key]))
    keys = {pk: [i.key for i in insts] for pk, insts in by_partition.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)  # data_version is "beta" in 1.13
        return dg.Output(
            StoredCell(key.to_user_string(), keys), metadata=metadata, data_version=data_version
        )


def _materialize(
    context: dg.AssetExecutionContext, location: Location, asset: CellAsset
) -> dg.Output[StoredCell]:
    further: FurtherResource = getattr(context.resources, RESOURCE_KEY)
    started = time.perf_counter()
    try:
        # the run's wave executor may have computed this step's instances (dagster/waves.py)
        waved = wave_report(context.run.run_id, context.get_step_execution_context().step.key)
        step = _step_instances(context, location, asset)
        report = _compute(context, further, asset, step, waved)
    except FurtherError as exc:
        raise _failure(asset, exc) from exc
    if report.computed:
        context.log.info(f"{asset.cell.full_name}: {report.summary()}")
    children = record_runtime_children(context, location, step, report)
    output = _output(context, location, asset, step, report, time.perf_counter() - started)
    if children:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", dg.BetaWarning)  # data_version is "beta" in 1.13
            output = output.with_metadata(
                {**output.metadata, T.RUNTIME_CALLS: dg.MetadataValue.json(children)}
            )
    return output


def _upstream_deps(asset: CellAsset) -> list[dg.AssetDep]:
    deps = []
    for up_cell, mapping in asset.upstream.items():
        up_key = asset_key_for(up_cell)
        if mapping is None:
            deps.append(dg.AssetDep(up_key))
        else:
            partition_mapping = dg.StaticPartitionMapping({k: v for k, v in mapping.items() if v})
            deps.append(dg.AssetDep(up_key, partition_mapping=partition_mapping))
    return deps


def _definition_metadata(asset: CellAsset, shared: _Shared) -> dict[str, Any]:
    cell = asset.cell
    fields = cell.Specs.model_fields
    defaults_known = all(not f.is_required() for f in fields.values())
    return {
        T.CELL_TAG: cell.full_name,
        T.LOGIC_VERSION: shared.text(str(cell.logic_version)),
        T.API_VERSION: shared.text(str(cell.api_version)),
        T.CONTRIBUTIONS: shared.text(", ".join(cell.contributions)),
        T.SPEC_DEFAULTS: dg.MetadataValue.json(
            json.loads(cell.Specs.model_construct().model_dump_json()) if defaults_known else {}
        ),
    }


def cell_asset(
    location: Location,
    asset: CellAsset,
    partitions: Mapping[str, dg.StaticPartitionsDefinition],
    backfill_policy: dg.BackfillPolicy | None,
    shared: _Shared | None = None,
) -> dg.AssetsDefinition:
    """The materializable asset of one (non-resource) cell; `shared`: what the assets of one
    build share (build_cell_assets passes one for all)."""
    shared = shared if shared is not None else _Shared()
    cell = asset.cell
    op_tags: dict[str, Any] = {T.CELL_TAG: cell.full_name}
    if cell.slurm is not None:
        op_tags[T.SLURM_TAG] = json.dumps(_slurm_json(cell.slurm))

    @dg.asset(
        key=asset_key_for(cell),
        group_name=cell.project.name,
        code_version=str(cell.logic_version),
        description=_description(asset, shared),
        deps=_upstream_deps(asset),
        partitions_def=partitions[asset.partitions.name] if asset.partitions else None,
        backfill_policy=backfill_policy,
        io_manager_key=IO_MANAGER_KEY,
        required_resource_keys={RESOURCE_KEY},
        kinds={T.KIND},
        op_tags=op_tags,
        metadata=_definition_metadata(asset, shared),
        config_schema=shared.schemas.field_for(cell),
    )
    def _asset(context: dg.AssetExecutionContext) -> dg.Output[StoredCell]:
        return _materialize(context, location, asset)

    return _asset


def _slurm_json(spec: Any) -> Any:
    if isinstance(spec, (list, tuple)):
        return [_slurm_json(s) for s in spec]
    dump = getattr(spec, "model_dump", None)
    return dump(mode="json") if dump else spec


def build_cell_assets(location: Location, backfill_policy: dg.BackfillPolicy | None) -> list[Any]:
    """One asset per cell: a materializable asset, or an observable source asset for a
    resource cell."""
    from further_dagster.dagster.resource_assets import resource_asset

    defs = partitions_defs(location)
    shared = _Shared()
    with warnings.catch_warnings():
        # BackfillPolicy is "beta" in Dagster 1.13; the warning would repeat for every cell.
        warnings.simplefilter("ignore", dg.BetaWarning)
        return [
            resource_asset(location, a)
            if a.cell.is_resource
            else cell_asset(location, a, defs, backfill_policy, shared)
            for a in location.projection.assets.values()
        ]


__all__ = ["build_cell_assets", "cell_asset", "instance_metadata", "partitions_defs"]
