"""Resource cells in Dagster: observable source assets, and the freshness of a run.

Each resource cell is an observable source asset with key [project, cell]; observing it calls
get_release() for every instance of the cell, records the answers in the store's release
history, and reports `DataVersion(release)` (one instance) or a digest of the releases (several),
so Dagster marks downstream cells stale when the data changes.

A run chooses releases with the cells' own freshness policies, overridden (most specific last)
by the code location (`build_definitions(freshness=...)`), the run config
(`resources.further.config.freshness`) and the run tag `further/freshness`. The tag and config
take a policy string (`latest`, `current:3600`, `present`, `release:<pin>`,
`date_range:<iso>..<iso>`) or a JSON object {"project" | "project.cell" | "*": policy}.
"""

import warnings
from collections.abc import Mapping
from typing import Any

import dagster as dg

from further_dagster.core.freshness import FreshnessOverrides, normalize_freshness
from further_dagster.core.hashing import digest
from further_dagster.core.instances import Instance
from further_dagster.core.resource import release_key
from further_dagster.dagster.projection import CellAsset
from further_dagster.dagster.registry import Compiled, asset_key_for
from further_dagster.dagster.resources import RESOURCE_KEY, FurtherStore
from further_dagster.engine.releases import ReleaseResolver, observe_all_latest
from further_dagster.store import ArtifactStore, ReleaseHistory

FRESHNESS_TAG = "further/freshness"
RELEASES_METADATA = "further/releases"


def run_freshness(
    compiled: Compiled, tags: Mapping[str, str] | None, configured: Any = None
) -> FreshnessOverrides:
    """The freshness overrides of one run: code location < run config < run tag.

    `configured` is the `further` resource's `freshness` (run config), when known.
    """
    overrides = compiled.default_freshness or FreshnessOverrides()
    cells = compiled.graph.cells()
    if configured:
        given = normalize_freshness(configured, where="run config resources.further.freshness")
        given.check(cells, where="run config resources.further.freshness")
        overrides = overrides.merged(given)
    tag = (tags or {}).get(FRESHNESS_TAG)
    if tag:
        given = normalize_freshness(tag, where=f"run tag {FRESHNESS_TAG}")
        given.check(cells, where=f"run tag {FRESHNESS_TAG}")
        overrides = overrides.merged(given)
    return overrides


def configured_freshness(run_config: Mapping[str, Any] | None) -> Any:
    """`resources.further.config.freshness` of a run config, if set."""
    resources = (run_config or {}).get("resources") or {}
    config = (resources.get(RESOURCE_KEY) or {}).get("config") or {}
    return config.get("freshness")


def resolver_factory(compiled: Compiled, root: str | None) -> Any:
    """What `Compiled.release_resolver_factory` calls: freshness -> a ReleaseResolver over the
    store (resolved when called, so FURTHER_ROOT set later still applies)."""

    def factory(freshness: Any = None) -> ReleaseResolver:
        overrides = freshness if freshness is not None else compiled.default_freshness
        return ReleaseResolver(ArtifactStore(root), overrides, source="dagster")

    return factory


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
    store: ArtifactStore, asset: CellAsset, source: str = "dagster"
) -> tuple[str, dict[str, Any]]:
    """Call get_release() for every instance of a resource asset and record the answers:
    returns (data version, observation metadata)."""
    resolver = observe_all_latest(store, source=source)
    insts = asset.instances[None]
    releases = {inst.skey: resolver(inst.cell, inst.specs) for inst in insts}
    return data_version_of(releases), observation_metadata(store, asset, releases)


def observation_metadata(
    store: ArtifactStore, asset: CellAsset, releases: Mapping[str, str]
) -> dict[str, Any]:
    insts = asset.instances[None]
    history = ReleaseHistory(store.root)
    cell = asset.cell
    stored = {}
    for inst in insts:
        key = release_key(cell, inst.specs, releases[inst.skey])
        stored[inst.skey] = store.is_stored(cell.project.name, cell.name, key)
    meta: dict[str, Any] = {
        RELEASES_METADATA: dg.MetadataValue.json(release_labels(insts, releases)),
        "further/stored": all(stored.values()),
        "further/history": dg.MetadataValue.path(
            str(history.path(cell.project.name, cell.name, insts[0].skey))
        ),
    }
    return meta


def resource_asset(compiled: Compiled, asset: CellAsset) -> Any:
    """The observable source asset of a resource cell."""
    cell = asset.cell
    doc = (cell.__doc__ or f"Resource cell {cell.full_name}.").strip()
    description = (
        f"{doc}\n\nResource cell: observing it calls get_release() and records the release; "
        f"its data is read (make()) by the first downstream step that needs a release not yet "
        f"stored. Freshness policy: {cell.freshness!r}."  # type: ignore[attr-defined]
    )

    def _observe(context: dg.AssetExecutionContext, further: FurtherStore) -> dg.ObserveResult:
        version, metadata = observe_resource(further.store(), asset)
        context.log.info(f"{cell.full_name}: release {version}")
        return dg.ObserveResult(data_version=dg.DataVersion(version), metadata=metadata)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)  # observable_source_asset is beta
        decorate = dg.observable_source_asset(
            key=asset_key_for(cell),
            group_name=cell.project.name,
            description=description,
            metadata={
                "further/cell": cell.full_name,
                "further/resource": True,
                "further/logic_version": str(cell.logic_version),
                "further/freshness": str(cell.freshness),  # type: ignore[attr-defined]
            },
        )
        return decorate(_observe)


__all__ = [
    "FRESHNESS_TAG",
    "RELEASES_METADATA",
    "configured_freshness",
    "data_version_of",
    "observe_resource",
    "resolver_factory",
    "resource_asset",
    "run_freshness",
]
