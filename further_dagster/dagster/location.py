"""One compiled code location: the projection of its projects, its store and its defaults.

`build_definitions` builds one `Location` and hands it to everything that needs it at run time:
the asset bodies and the observe functions close over it, and the `further` resource and the
IO manager are resource definitions that carry it. The executor and the Slurm step handler find
it through the job they run (`location_of(job_def)`). So two `build_definitions` calls in one
process, over the same projects with different roots or freshness, never see each other's
settings: there is no process-wide registry.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import dagster as dg

from further_dagster.core.cell import Cell
from further_dagster.core.freshness import FreshnessOverrides
from further_dagster.core.graph import DefinitionGraph
from further_dagster.core.instances import (
    CallContext,
    Instance,
    ReleaseLookup,
    Resolver,
)
from further_dagster.core.iterative import Increments, Transformer, transformer_tree
from further_dagster.core.keys import STRUCTURAL_RELEASE
from further_dagster.core.project import Project
from further_dagster.dagster import tags as T
from further_dagster.dagster.specs_config import (
    config_increments,
    config_transformers,
    split_config,
)
from further_dagster.engine.increments import StoredIncrements
from further_dagster.engine.labels import label_context, label_freshness, label_names
from further_dagster.engine.modes import Mode, parse_mode
from further_dagster.engine.plan import missing
from further_dagster.engine.projection import CellAsset, Projection
from further_dagster.engine.releases import Clock, ReleaseResolver
from further_dagster.store import ArtifactStore, Store, resolve_root

RESOURCE_KEY = "further"
IO_MANAGER_KEY = "further_io_manager"


def asset_key_for(cell: type[Cell]) -> dg.AssetKey:
    """`[project, cell]`: the asset key of a cell (`fit_v1_4` for an archived cell version,
    `lib_v1_4` for the project part of an archived project version)."""
    return dg.AssetKey([cell.project.asset_name, cell.asset_name])


@dataclass(frozen=True)
class StepInstances:
    """What one step (or one run's selection of assets) covers.

    Attributes:
        by_asset: asset key -> partition key (None: unpartitioned) -> the actual instances.
        missing: what must be computed so that all of them are stored (engine.plan.missing).
        labels: asset key -> the project_inits labels its instances were resolved under.
    """

    by_asset: Mapping[dg.AssetKey, Mapping[str | None, list[Instance]]]
    missing: list[Instance]
    labels: Mapping[dg.AssetKey, tuple[str, ...]] = field(default_factory=dict)

    @property
    def instances(self) -> list[Instance]:
        return [i for by_pk in self.by_asset.values() for g in by_pk.values() for i in g]


class Location:
    """The projection of `graph` under `roots`, with the code location's settings.

    Args:
        graph: the definition graph of the projects.
        roots: (cell, values) to resolve; None: every cell nothing else requires.
        root: store root; None resolves FURTHER_ROOT / `.further` when the store is needed,
            so a test or a Slurm job that sets FURTHER_ROOT later still applies.
        freshness: the code location's freshness overrides (build_definitions(freshness=)).
        mode: the default mode ceiling of its runs.
        slurm_client: the Slurm client its executor and steps use (None: the real one).
        trust: projects whose pickled results cells of other projects may read as inputs
            (`build_definitions(trust=...)` passes its own and the projects it compiles).
        index_url: the store's SQL index (None: FURTHER_INDEX_URL, else `<root>/.index.sqlite`).
        labels: labels of `label_project`'s project_inits.yaml applied to every asset
            (`build_definitions(project_init_label=...)`); a run may pick others per asset.
        label_project: the project whose labels those are (default: the graph's first).
    """

    def __init__(
        self,
        graph: DefinitionGraph,
        roots: Sequence[tuple[str | type[Cell], Mapping[str, Any]]] | None,
        *,
        root: str | Path | None = None,
        freshness: FreshnessOverrides | None = None,
        mode: str | Mode = Mode.LOCAL,
        slurm_client: Any = None,
        trust: Sequence[str] = (),
        index_url: str | None = None,
        labels: str | Sequence[str] | None = None,
        label_project: Project | None = None,
    ) -> None:
        self.graph = graph
        self.index_url = index_url
        self.trust = tuple(trust)
        self.labels = label_names(labels)
        self.label_project = label_project or next(iter(graph.projects.values()), None)
        self._roots = roots
        self._labelled: dict[tuple[str, ...], Projection] = {}
        self.projection = self.projection_for(self.labels)
        self.has_increments = any(c.is_incrementing for c in graph.cells())
        self.asset_by_key: dict[dg.AssetKey, CellAsset] = {
            asset_key_for(cell): asset for cell, asset in self.projection.assets.items()
        }
        self.root = None if root is None or str(root) == "" else str(root)
        self.freshness = freshness or FreshnessOverrides()
        self.default_freshness = self.freshness_for(self.labels)
        self.default_mode = parse_mode(mode, where="build_definitions(mode=...)")
        self.slurm_client = slurm_client
        self._stores: dict[Path, ArtifactStore] = {}

    def __repr__(self) -> str:
        return f"Location({len(self.asset_by_key)} assets, root={self.root!r})"

    def freshness_for(self, labels: Sequence[str]) -> FreshnessOverrides:
        """The freshness overrides under `labels`: their policies (routed labels' included),
        below the location's own `freshness=`."""
        if not labels or self.label_project is None:
            return self.freshness
        return label_freshness(self.label_project, labels).merged(self.freshness)

    def context_for(self, labels: Sequence[str]) -> CallContext:
        """The call context (params, specs, opts, called assignments) of `labels`."""
        if not labels or self.label_project is None:
            return CallContext()
        return label_context(self.label_project, labels)

    def counted_projection(
        self, labels: Sequence[str], increments: Mapping[type[Cell], Increments]
    ) -> Projection:
        """The projection under `labels` with every increments instruction resolved against
        the store now (and `increments` for incrementing roots): never cached."""
        counter = StoredIncrements(self.store())
        context = replace(self.context_for(tuple(labels)), increment_counter=counter)
        return Projection(self.graph, self._roots, context, increments)

    def projection_for(self, labels: Sequence[str]) -> Projection:
        """The projection of the location's roots under `labels` (built once per labels)."""
        key = tuple(labels)
        found = self._labelled.get(key)
        if found is None:
            found = self._labelled[key] = Projection(self.graph, self._roots, self.context_for(key))
        return found

    @property
    def has_resources(self) -> bool:
        return self.projection.has_resources

    def store(self) -> Store:
        """The store of this location (one per resolved root, built once)."""
        path = resolve_root(self.root)
        found = self._stores.get(path)
        if found is None:
            found = self._stores[path] = ArtifactStore(
                path, trust=self.trust, index_url=self.index_url
            )
        return found

    def release_resolver(
        self,
        freshness: FreshnessOverrides | None = None,
        *,
        source: str = "dagster",
        always_observe: bool = False,
        clock: Clock | None = None,
    ) -> ReleaseResolver:
        """A resolver of releases under `freshness` (default: the location's overrides)."""
        return ReleaseResolver(
            self.store(),
            freshness if freshness is not None else self.default_freshness,
            source=source,
            always_observe=always_observe,
            clock=clock,
        )

    def actual_instances(
        self,
        freshness: FreshnessOverrides | None = None,
        *,
        resolver: ReleaseResolver | None = None,
    ) -> dict[str, Instance]:
        """Structural key -> instance with the releases of now, dependencies first."""
        if not self.has_resources:
            return self.projection.actual_instances(None)
        return self.projection.actual_instances(resolver or self.release_resolver(freshness))

    def instances_for(
        self,
        asset_key: dg.AssetKey,
        partition_keys: Sequence[str] | None,
        actual: Mapping[str, Instance],
    ) -> dict[str | None, list[Instance]]:
        """Partition key (None when unpartitioned) -> the actual instances of that partition."""
        return self.projection.instances_for(
            self.asset_by_key[asset_key].cell, partition_keys, actual
        )

    def configured(
        self,
        inst: Instance,
        specs: Mapping[str, Any],
        opts: Mapping[str, Any],
        releases: ReleaseLookup | None,
        labels: Sequence[str] | None = None,
        transformers: Mapping[str, Transformer] | None = None,
    ) -> Instance:
        """`inst` with some Specs (and Opts) or transformers set by a run's config: a new
        instance, with its own logic key, resolved like a Session call with those values."""
        values = {**inst.specs.model_dump(), **specs}
        lookup = releases or (lambda cell, s: STRUCTURAL_RELEASE)
        context = replace(self.context_for(labels or self.labels), release_resolver=lookup)
        if transformers:
            tree, found = transformer_tree(self.graph, inst.cell, None, transformers)
            context = replace(context, addressed=tree, transformers=found)
        resolver = Resolver(self.graph, context)
        return resolver.instance(inst.cell, values, root_opts={**inst.opts.model_dump(), **opts})

    def step_instances(
        self,
        partitions: Mapping[dg.AssetKey, Sequence[str] | None],
        actual: Mapping[str, Instance],
        *,
        config: Mapping[dg.AssetKey, Mapping[str, Any]] | None = None,
        releases: ReleaseLookup | None = None,
        verify: bool = True,
        tags: Mapping[str, str] | None = None,
    ) -> StepInstances:
        """The instances of these assets (asset key -> its partition keys, None for all) and
        what of them is missing, by the one rule of engine/plan.py. `config` gives the assets'
        run config (dagster/specs_config.py): Specs set there select other instances; labels
        come from it or from the run's `further/init_label` tag (`tags`). A step
        never trusts a stat alone (`verify`): a damaged result is moved aside and computed
        again, and the skip-cached executor never reports it as a cache hit."""
        counted = None
        if self.has_increments:
            # which increment an instruction names depends on what is stored: resolve now
            told = {
                self.asset_by_key[k].cell: found
                for k, given in (config or {}).items()
                if (found := config_increments(self.asset_by_key[k].cell, given)) is not None
            }
            counted = self.counted_projection(self.labels, told)
            actual = counted.actual_instances(releases)
            by_asset = {
                key: counted.instances_for(self.asset_by_key[key].cell, pks, actual)
                for key, pks in partitions.items()
            }
        else:
            by_asset = {
                key: self.instances_for(key, pks, actual) for key, pks in partitions.items()
            }
        chosen = {key: self.labels for key in by_asset} if self.labels else {}
        tagged = labels_of_tags(tags)
        for key in list(by_asset):
            given = (config or {}).get(key)
            cell = self.asset_by_key[key].cell
            specs, opts, labels = split_config(cell, given)
            if labels is None:
                labels = tagged  # the run's tag, where the asset's op config names none
            if labels is not None:
                chosen[key] = labels
            if labels is not None and labels != self.labels:
                labelled = (
                    self.counted_projection(labels, counted.increments)
                    if counted is not None
                    else self.projection_for(labels)
                )
                by_asset[key] = labelled.instances_for(
                    cell, partitions[key], labelled.actual_instances(releases)
                )
            transformers = config_transformers(cell, given)
            if specs or opts or transformers:
                by_asset[key] = {
                    pk: [
                        self.configured(i, specs, opts, releases, labels, transformers)
                        for i in insts
                    ]
                    for pk, insts in by_asset[key].items()
                }
        targets = [i for by_pk in by_asset.values() for g in by_pk.values() for i in g]
        todo = missing(self.store(), targets, verify=verify)
        run_labels = tagged if tagged is not None else self.labels
        for inst in todo:  # recorded in provenance; an asset's own labels below
            inst.labels = run_labels
        for key, by_pk in by_asset.items():
            for group in by_pk.values():
                for inst in group:
                    inst.labels = tuple(chosen.get(key, ()))
        return StepInstances(by_asset, todo, chosen)


def labels_of_tags(tags: Mapping[str, str] | None) -> tuple[str, ...] | None:
    """The labels a run's `further/init_label` tag names ("fast" or "fast,detailed"), or None."""
    raw = (tags or {}).get(T.INIT_LABEL_TAG)
    if raw is None:
        return None
    return tuple(part.strip() for part in raw.split(",") if part.strip())


class FurtherResourceDefinition(dg.ResourceDefinition):
    """The `further` resource: carries the location, so anything holding the job finds it."""

    location: Location


def location_of(holder: Any) -> Location | None:
    """The Location behind a job definition or a `Definitions` built by build_definitions."""
    resources: Any
    if isinstance(holder, dg.Definitions):
        resources = holder.resources or {}
    else:
        resources = getattr(holder, "resource_defs", None) or {}
    found = resources.get(RESOURCE_KEY) if hasattr(resources, "get") else None
    return found.location if isinstance(found, FurtherResourceDefinition) else None


__all__ = [
    "IO_MANAGER_KEY",
    "RESOURCE_KEY",
    "FurtherResourceDefinition",
    "Location",
    "StepInstances",
    "asset_key_for",
    "location_of",
]
