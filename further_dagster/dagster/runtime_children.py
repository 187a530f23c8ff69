"""DYN / STUB / RAND children a step's instances called while they ran (engine/dynamic.py),
made visible in Dagster: listed in the step's metadata, and materialized on their own asset
when the child's cell is an (unpartitioned) asset of the code location."""

from __future__ import annotations

from typing import Any

import dagster as dg

from further_dagster.core.project import resolve_cell
from further_dagster.dagster import _compat
from further_dagster.dagster import tags as T
from further_dagster.dagster.location import Location, StepInstances, asset_key_for
from further_dagster.engine.scheduler import RunReport
from further_dagster.errors import FurtherError


def record_runtime_children(
    context: dg.AssetExecutionContext, location: Location, step: StepInstances, report: RunReport
) -> list[dict[str, Any]]:
    """The runtime children of the instances this step computed (edge, cell, key, computed),
    each computed child also recorded as a materialization of its own asset."""
    store = location.store()
    step_key = context.get_step_execution_context().step.key
    found: list[dict[str, Any]] = []
    for inst in step.missing:
        outcome = report.outcomes.get(inst.key)
        if not inst.dynamic or outcome is None or outcome.hit:
            continue
        try:
            provenance = store.read_provenance(inst.cell.project.name, inst.cell.name, inst.key)
        except (FurtherError, OSError):
            continue
        calls = provenance.extra.get("runtime_calls")
        for call in calls if isinstance(calls, list) else []:
            if not isinstance(call, dict):
                continue
            found.append({k: call.get(k) for k in ("edge", "kind", "cell", "key", "computed")})
            if call.get("computed"):
                _materialize_child(context, location, inst.label, step_key, call)
    return found


def _materialize_child(
    context: dg.AssetExecutionContext,
    location: Location,
    caller: str,
    step_key: str,
    call: dict[str, Any],
) -> None:
    try:
        cell = resolve_cell(str(call.get("cell")))
    except FurtherError:
        return
    asset = location.projection.assets.get(cell)
    if asset is None or asset.partitions is not None or cell.is_resource:
        return  # not an asset here, or no partition names this child
    key = str(call.get("key"))
    context.log_event(
        dg.AssetMaterialization(
            asset_key=asset_key_for(cell),
            metadata={
                T.LOGIC_KEY: key,
                T.CACHE: "miss",
                T.COMPUTED_BY_STEP: step_key,
                T.RUNTIME_CALLER: caller,
                T.SPECS: dg.MetadataValue.json(call.get("values") or {}),
                **T.index_link(getattr(location.store(), "index_url", None), key),
            },
            tags={
                _compat.DATA_VERSION_TAG: key,
                _compat.DATA_VERSION_IS_USER_PROVIDED_TAG: "true",
                _compat.CODE_VERSION_TAG: str(cell.logic_version),
            },
        )
    )
