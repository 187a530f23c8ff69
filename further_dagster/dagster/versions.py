"""Data versions and code versions, recorded the way Dagster reads them.

Dagster reads a materialization's versions from its tags (`dagster/data_version`,
`dagster/code_version`, `dagster/input_data_version/<key>`, `dagster/input_event_pointer/<key>`)
and decides staleness from them. A step Dagster runs writes them itself (our asset body gives
the logic key as the data version); a step the skip-cached executor never starts, and a cache
hit reported by the release sensor, are recorded by us, so they must carry the same tags: data
version = logic key, code version = logic_version, and each upstream asset's current data version
with a pointer to the event that carries it. A cached step is consistent by construction (its
key rests on the upstream keys of now), so "current" is right for its inputs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import dagster as dg

from further_dagster.core.cell import Cell
from further_dagster.core.instances import Instance
from further_dagster.dagster import _compat
from further_dagster.dagster.location import asset_key_for


def input_tags(
    instance: dg.DagsterInstance,
    upstream: Iterable[type[Cell]],
    recorded: Mapping[dg.AssetKey, tuple[int, Any]] | None = None,
) -> dict[str, str]:
    """The input tags of a materialization recorded now: for each upstream asset, its latest
    data version and the storage id of the event that carries it (observations for resource
    cells, materializations otherwise). `recorded` (asset key -> (storage id, event log entry)
    of the latest materializations written in the open event batch, see
    dagster/sqlite_events.py) answers for those assets without a query."""
    tags: dict[str, str] = {}
    for cell in upstream:
        key = asset_key_for(cell)
        entry: Any = None
        storage_id: int | None = None
        if recorded is not None and not cell.is_resource and key in recorded:
            storage_id, entry = recorded[key]
        else:
            record = instance.get_latest_data_version_record(key, is_source=cell.is_resource)
            if record is not None:
                storage_id, entry = record.storage_id, record.event_log_entry
        version = _compat.extract_data_version_from_entry(entry) if entry is not None else None
        tags[_compat.get_input_data_version_tag(key)] = (
            version.value if version is not None else "INITIAL"
        )
        tags[_compat.get_input_event_pointer_tag(key)] = (
            str(storage_id) if storage_id is not None else _compat.NULL_EVENT_POINTER
        )
    return tags


def version_tags(inst: Instance, inputs: dict[str, str]) -> dict[str, str]:
    """The version tags of `inst`'s materialization: its logic key (user provided) and code."""
    return {
        _compat.DATA_VERSION_TAG: inst.key,
        _compat.DATA_VERSION_IS_USER_PROVIDED_TAG: "true",
        _compat.CODE_VERSION_TAG: str(inst.cell.logic_version),
        **inputs,
    }


def observation_tags(version: str) -> dict[str, Any]:
    """The tags of an observation of a resource asset at data version `version`."""
    return {_compat.DATA_VERSION_TAG: version}


def latest_data_version(
    instance: dg.DagsterInstance, key: dg.AssetKey, *, source: bool, partition: str | None = None
) -> str | None:
    """The data version of the asset's (partition's) latest record, if any."""
    record = instance.get_latest_data_version_record(key, is_source=source, partition_key=partition)
    if record is None:
        return None
    version = _compat.extract_data_version_from_entry(record.event_log_entry)
    return version.value if version is not None else None


__all__ = ["input_tags", "latest_data_version", "observation_tags", "version_tags"]
