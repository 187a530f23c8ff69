"""Resource cells in Dagster: observable source assets, and the freshness of a run.

Each resource cell is an observable source asset with key [project, cell]; observing it calls
get_release() for every instance of the cell, records the answers in the store's release
history, and reports `DataVersion(release)` (one instance) or a digest of the releases (several),
so Dagster marks downstream cells stale when the data changes.

Which release a run uses is decided by the run's freshness chain (dagster/run_config.py).
"""

import warnings
from collections.abc import Mapping
from typing import Any

import dagster as dg

from further_dagster.core.hashing import digest
from further_dagster.core.instances import Instance
from further_dagster.core.keys import release_key
from further_dagster.dagster import tags as T
from further_dagster.dagster.location import RESOURCE_KEY, Location, asset_key_for
from further_dagster.engine.projection import CellAsset
from further_dagster.engine.releases import observe_all_latest
from further_dagster.store import ReleaseHistory, Store


def data_version_of(releases: Mapping[str, str]) -> str:
    """The data version of a resource asset: its release, or a digest of the releases of its
    instances (keyed by structural key) when the cell has several."""
    if len(releases) == 1:
        return next(iter(releases.values()))
    return "releases:" + digest(dict(sorted(releases.items())))[:16]


def release_labels(insts: list[Instance], releases: Mapping[str, str]) -> dict[str, str]:
    """{"project.cell" (plus the Specs when the cell has several instances): release}."""
    out: dict[str, str] = {}
    for inst in insts:
        label = inst.cell.full_name
        if len(insts) > 1:
            label += "(" + ", ".join(f"{k}={v!r}" for k, v in dict(inst.specs).items()) + ")"
        out[label] = releases[inst.skey]
    return out


def observe_resource(
    store: Store, asset: CellAsset, source: str = "dagster"
) -> tuple[str, dict[str, Any]]:
    """Call get_release() for every instance of a resource asset and record the answers:
    returns (data version, observation metadata)."""
    resolver = observe_all_latest(store, source=source)
    insts = asset.instances[None]
    releases = {inst.skey: resolver(inst.cell, inst.specs) for inst in insts}
    return data_version_of(releases), observation_metadata(store, asset, releases)


def observation_metadata(
    store: Store, asset: CellAsset, releases: Mapping[str, str]
) -> dict[str, Any]:
    insts = asset.instances[None]
    history = ReleaseHistory(store.root)
    cell = asset.cell
    stored = {}
    for inst in insts:
        key = release_key(cell, inst.specs, releases[inst.skey])
        stored[inst.skey] = store.is_stored(cell.project.name, cell.name, key)
    meta: dict[str, Any] = {
        T.RELEASES: dg.MetadataValue.json(release_labels(insts, releases)),
        T.STORED: all(stored.values()),
        T.HISTORY: dg.MetadataValue.path(
            str(history.path(cell.project.name, cell.name, insts[0].skey))
        ),
    }
    return meta


def resource_asset(location: Location, asset: CellAsset) -> Any:
    """The observable source asset of a resource cell."""
    cell = asset.cell
    doc = (cell.__doc__ or f"Resource cell {cell.full_name}.").strip()
    description = (
        f"{doc}\n\nResource cell: observing it calls get_release() and records the release; "
        f"its data is read (make()) by the first downstream step that needs a release not yet "
        f"stored. Freshness policy: {cell.freshness!r}."  # type: ignore[attr-defined]
    )

    key = asset_key_for(cell)
    spec = dg.AssetSpec(
        key=key,
        group_name=cell.project.name,
        description=description,
        code_version=str(cell.logic_version),
        metadata={
            T.CELL_TAG: cell.full_name,
            T.RESOURCE: True,
            T.LOGIC_VERSION: str(cell.logic_version),
            T.FRESHNESS: str(cell.freshness),  # type: ignore[attr-defined]
        },
    )

    def _observe(context: dg.AssetExecutionContext) -> dg.ObserveResult:
        version, metadata = observe_resource(location.store(), asset)
        context.log.info(f"{cell.full_name}: release {version}")
        return dg.ObserveResult(
            asset_key=key, data_version=dg.DataVersion(version), metadata=metadata
        )

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)  # observable source assets are beta
        # AssetSpec-based: no deprecated SourceAsset, and the code version shows in the UI
        decorate = dg.multi_observable_source_asset(
            specs=[spec],
            name=f"{cell.project.asset_name}__{cell.asset_name}",
            required_resource_keys={RESOURCE_KEY},
        )
        return decorate(_observe)


__all__ = ["data_version_of", "observation_metadata", "observe_resource", "resource_asset"]
