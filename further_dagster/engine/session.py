"""Session: call cells from a notebook or a script, computing only what is not stored."""

from __future__ import annotations

import contextlib
import datetime as dt
import gc
import logging
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from further_dagster.core.addressing import check_cell_names
from further_dagster.core.cell import Cell, Contributions
from further_dagster.core.freshness import normalize_freshness
from further_dagster.core.graph import DefinitionGraph
from further_dagster.core.instances import (
    CallContext,
    Instance,
    Resolver,
)
from further_dagster.core.iterative import Increments, transformer_tree
from further_dagster.core.params import has_var
from further_dagster.core.project import Project, generation, resolve_cell
from further_dagster.core.query import query_runner
from further_dagster.engine import record
from further_dagster.engine.compute import ResultCache, load
from further_dagster.engine.increments import StoredIncrements, increment_of, result_instance
from further_dagster.engine.labels import label_names, with_labels
from further_dagster.engine.modes import Mode, parse_mode
from further_dagster.engine.plan import Plan, plan_for
from further_dagster.engine.presence import StoredLookup
from further_dagster.engine.queries import runner_for
from further_dagster.engine.releases import Clock, ReleaseResolver
from further_dagster.engine.scheduler import RunReport, run_missing
from further_dagster.engine.sweep import SessionSweep, drawn
from further_dagster.store import ArtifactStore, ReleaseHistory

if TYPE_CHECKING:
    from further_dagster.engine.backends.slurm import SlurmSettings

log = logging.getLogger("further")


def _install_console_logging() -> None:
    """Progress goes to stderr unless the application configured logging itself."""
    if log.handlers or logging.getLogger().handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s further %(message)s", "%H:%M:%S"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)


class Session:
    """Calls cells, computing only instances whose logic key is not stored.

    Args:
        *projects: projects to load and check up front (the called cell's project and the
            projects its edges reach are always loaded).
        root: store root (default: env FURTHER_ROOT, else `.further` beside pyproject.toml).
        mode: INLINE (one thread, the default) or LOCAL (thread pool); LOCAL_PROCESSES uses a
            process pool. DASK runs instances as Dask tasks
            (FURTHER_DASK_ADDRESS, else a local cluster); SLURM as Slurm job arrays, one per wave
            of ready instances (configured by `slurm`; engine/backends/slurm.py).
        max_workers: pool size for LOCAL modes.
        progress: log progress lines to stderr (when logging is not configured).
        store: an ArtifactStore to use instead of `root`.
        freshness: default freshness override for every call (see `call`).
        clock: returns the current aware datetime, for freshness policies (default: UTC now).
        slurm: how SLURM mode submits (`SlurmSettings`: folder, base spec, arrays, client);
            default: a fresh folder under the store root, the cells' own specs, job arrays.
        trust: projects whose pickled results cells of other projects may read as inputs.
            Trusted without it: the projects passed as `*projects` and, for each call, the
            called cell's project; any other project is external (engine/compute.py), and an
            input pickled by it raises `UntrustedPickleError`.
        index_url: the store's SQL index (default `FURTHER_INDEX_URL`, else SQLite at
            `<root>/.index.sqlite`; "none": no index), read by `query`, `instances`,
            `results` and `explain` (engine/record.py).
    """

    def __init__(
        self,
        *projects: Project,
        root: str | Path | None = None,
        mode: str | Mode = Mode.INLINE,
        max_workers: int | None = None,
        progress: bool = True,
        store: ArtifactStore | None = None,
        freshness: Any = None,
        clock: Clock | None = None,
        slurm: SlurmSettings | None = None,
        trust: Sequence[str] = (),
        index_url: str | None = None,
    ) -> None:
        own = [*trust, *(p.name for p in projects)]
        self.store = (store or ArtifactStore(root, index_url=index_url)).with_trust(own)
        if store is not None and index_url is not None:
            self.store = self.store.with_index(index_url)
        self.slurm = slurm
        self.freshness = normalize_freshness(freshness, where="Session(freshness=...)")
        self.clock: Callable[[], Any] | None = clock
        self._history = ReleaseHistory(self.store.root)
        self.mode = parse_mode(mode, where="Session")
        self.max_workers = max_workers
        self._projects = list(projects)
        self._graphs: dict[tuple[str, ...], tuple[DefinitionGraph, int]] = {}
        self._plans: dict[str, _CachedPlan] = {}
        self._results = ResultCache()
        self.last_report: RunReport | None = None
        if progress:
            _install_console_logging()

    def graph_for(self, target: type[Cell]) -> DefinitionGraph:
        """The definition graph of the session's projects (default: the called cell's project)
        and every project their edges reach; rebuilt when cells are added."""
        projects = list(self._projects)
        if target.project not in projects:
            projects.append(target.project)
        names = tuple(sorted(p.address for p in projects))
        current = generation()
        cached = self._graphs.get(names)
        if cached is None or cached[1] != current:
            cached = (DefinitionGraph(projects), current)
            self._graphs[names] = cached
        return cached[0]

    def plan(
        self,
        cell: str | type[Cell],
        *,
        specs: Mapping[str, Mapping[str, Any]] | None = None,
        params: Mapping[str, Any] | None = None,
        project_params: Mapping[str, Mapping[str, Any]] | None = None,
        opts: Mapping[str, Mapping[str, Any]] | None = None,
        freshness: Any = None,
        project_init_label: str | Sequence[str] | None = None,
        addressed: Mapping[str, Mapping[str, Any]] | None = None,
        increments: Increments | None = None,
        transformers: Mapping[str, Any] | None = None,
        **values: Any,
    ) -> Plan:
        """Resolve a call without running it (same arguments as `call`). Resource releases are
        resolved here (get_release() is called as the freshness policies require)."""
        target = resolve_cell(cell)
        graph = self.graph_for(target)
        check_cell_names(graph, target, specs, "specs")
        check_cell_names(graph, target, opts, "opts")
        tree, transformed = transformer_tree(graph, target, addressed, transformers)
        values, params, project_params, specs = drawn(values, params, project_params, specs)
        assignments: dict[str, Any] = {}
        if project_init_label is not None:
            project_params, specs, opts, freshness, assignments = with_labels(
                target.project,
                project_init_label,
                project_params,
                specs,
                opts,
                freshness,
            )
        all_params = {**(project_params or {})}
        if params:
            own = target.project.address  # lib@1.4 for a cell of an archived project
            all_params[own] = {**all_params.get(own, {}), **params}
        plan_key = repr((target.full_name, values, all_params, specs, opts, addressed, assignments))
        cached = self._plans.get(plan_key) if increments is None and not transformed else None
        if cached is not None and freshness is None and cached.valid():
            return plan_for(
                self.store,
                cached.roots,
                swept=cached.swept,
                instances=cached.instances,
                looked=self._results.stored,
            )
        releases = self._release_resolver(graph, freshness)
        swept = has_var(values) or any(
            has_var(v) for group in (all_params, specs or {}) for v in group.values()
        )
        sweep = SessionSweep(graph, target, values, all_params, dict(specs or {}))
        resolver = Resolver(graph)
        root_opts = (opts or {}).get(target.full_name)
        # QUERY values come from the store's index while this call resolves
        counter = StoredIncrements(self.store)
        with _no_gc(), query_runner(runner_for(self.store)) as queries:
            context: CallContext | None = None
            last_tags = None
            count, combos = sweep.combos()
            roots: list[Instance | None] = [None] * count
            for position, combo_values, combo_params, combo_specs, tags in combos:
                # combinations that differ only in the root values share one context
                if (
                    context is None
                    or combo_params is not context.params
                    or combo_specs is not context.specs
                    or tags is not last_tags
                ):
                    context = CallContext(
                        params=combo_params,
                        specs=combo_specs,
                        opts=opts or {},
                        release_resolver=releases,
                        assignments=assignments,
                        addressed=tree,
                        increment_counter=counter,
                        transformers=transformed,
                    )
                    resolver.use(context, tags)
                    last_tags = tags
                roots[position] = resolver.instance(
                    target, combo_values, root_opts=root_opts, increments=increments
                )
            instances = resolver.resolved()
            del resolver
            cache = not queries and not transformed
            # every position was filled: combos() yields each exactly once
            done = cast(list[Instance], roots)
            return self._planned(plan_key, done, instances, swept, releases, cache=cache)

    def _planned(
        self,
        plan_key: str,
        roots: list[Instance],
        instances: list[Instance],
        swept: bool,
        releases: ReleaseResolver,
        *,
        cache: bool = True,
    ) -> Plan:
        if cache and not any(inst.cell.is_resource or inst.increment for inst in instances):
            # Releases and increments are resolved against the store on every call; any other
            # plan can be reused.
            if len(self._plans) >= 256:
                self._plans.pop(next(iter(self._plans)))
            self._plans[plan_key] = _CachedPlan(roots, instances, swept)
        return plan_for(
            self.store,
            roots,
            swept=swept,
            releases=tuple(releases.resolved.values()),
            instances=instances,
            looked=StoredLookup(),
        )

    def _release_resolver(self, graph: DefinitionGraph, freshness: Any) -> ReleaseResolver:
        overrides = self.freshness
        if freshness is not None:
            given = normalize_freshness(freshness, where="freshness=")
            given.check(graph.cells(), where="freshness=")
            overrides = overrides.merged(given)
        elif overrides:
            overrides.check(graph.cells(), where="Session(freshness=...)")
        return ReleaseResolver(self.store, overrides, clock=self.clock, history=self._history)

    def call(
        self,
        cell: str | type[Cell],
        *,
        specs: Mapping[str, Mapping[str, Any]] | None = None,
        params: Mapping[str, Any] | None = None,
        project_params: Mapping[str, Mapping[str, Any]] | None = None,
        opts: Mapping[str, Mapping[str, Any]] | None = None,
        mode: str | Mode | None = None,
        freshness: Any = None,
        project_init_label: str | Sequence[str] | None = None,
        addressed: Mapping[str, Mapping[str, Any]] | None = None,
        retry_failed: bool = False,
        increments: Increments | None = None,
        transformers: Mapping[str, Any] | None = None,
        **values: Any,
    ) -> Contributions | list[Contributions]:
        """Compute (or load) `cell` and return its contributions.

        Args:
            cell: "project.cell" or the Cell class.
            specs: addressed Specs for any cell the call reaches: {"project.cell": {field:
                value}} (every instance of that cell; a name the call does not reach is an
                AddressError listing the valid ones).
            params: project params of the called cell's project, e.g. {"seed": VAR([0, 1])};
                they win over the callers' edge values (core/instances.py has the order).
            project_params: project params of other projects: {"project": {name: value}}.
            opts: addressed Opts: {"project.cell": {field: value}} (never part of any key).
            addressed: Specs injected at one place of the graph: {"fits/data": {field: value}},
                the req_cells edge names from the called cell joined by "/" (a swept edge on
                the path: every combination). Above `specs`, below the call's own values.
            mode: execution mode for this call (default: the session's).
            freshness: which release every resource cell reached by this call uses, overriding
                the cells' own policies: a policy (`latest()`, `current(3600)`, `present()`,
                `release(pin)`, `date_range(start, end)`) or its string form for every
                resource, or {"project": policy, "project.cell": policy} (the most specific
                wins). Never part of a key: only the resolved release is.
            project_init_label: a label of the called cell's project (its `project_inits.yaml`),
                or a list of labels to merge: their cell Specs, project params, Opts and
                freshness apply to this call, above the callers' edge values and below this
                call's own `params`, `specs`, `opts`, `freshness` and values.
            retry_failed: run again the instances this call reaches that are refused (they
                failed `max_attempts` times, or returned wrong contributions): their failure
                count is reset (recorded in their state) before they run.
            increments: for an IncrementingCell, which increment to return (and compute up
                to): `Increments(exactly=N | at_least=N | best=True | more=K)`, resolved
                against the store; default the cell's own `increments`. `result.increment`
                is the increment returned; `session.increment(result, i)` loads another.
            transformers: {"fits/data": Standardize} (a `Transformer` class or instance per
                edge path, the syntax of `addressed`): reshapes the Specs of the instance that
                path reaches; the reshaped values are its Specs, recorded in its provenance.
            **values: Specs of the called cell; a `VAR([...])` sweeps it, a `RAND(...)` is
                drawn anew for this call.

        Returns:
            The Contributions (mapping and attributes) of the called instance, or a list of
            them, one per combination, when any session-level value is a VAR.
        """
        start = time.perf_counter()
        self._results.next_call()
        plan = self._computed(
            cell,
            mode,
            retry_failed,
            specs=specs,
            params=params,
            project_params=project_params,
            opts=opts,
            freshness=freshness,
            project_init_label=project_init_label,
            addressed=addressed,
            increments=increments,
            transformers=transformers,
            **values,
        )
        results = [self._results.load(self.store, root) for root in plan.roots]
        assert self.last_report is not None
        self.last_report.seconds = time.perf_counter() - start
        return results if plan.swept else results[0]

    def stream(
        self,
        cell: str | type[Cell],
        *,
        mode: str | Mode | None = None,
        retry_failed: bool = False,
        **arguments: Any,
    ) -> Iterator[Contributions]:
        """`call` for sweeps too large to hold every result in memory at once (the same
        arguments). What is missing is computed before this returns, so failures raise here as
        in `call`; each combination's result is then loaded only when the iteration reaches
        it, in the order `call` returns them (one item for a call without a session-level VAR).
        """
        plan = self._computed(cell, mode, retry_failed, **arguments)
        return (load(self.store, root) for root in plan.roots)

    def _computed(
        self, cell: str | type[Cell], mode: str | Mode | None, retry_failed: bool, **arguments: Any
    ) -> Plan:
        """Plan the call (`arguments` as `plan` takes them) and compute what is missing."""
        start = time.perf_counter()
        plan = self.plan(cell, **arguments)
        if plan.stubs:
            log.info(
                "%s: STUB edges (not statically visible: move to VAR/CONST when the values are "
                "known): %s",
                plan.roots[0].cell.full_name,
                ", ".join(plan.stubs),
            )
        report = RunReport()
        report.cached = [i.key for i in plan.stored]
        if plan.missing:
            log.info(
                "%s: %d instance(s), %d stored, %d to compute",
                plan.roots[0].cell.full_name,
                len(plan.instances),
                len(plan.instances) - len(plan.missing),
                len(plan.missing),
            )
        self.last_report = report
        if retry_failed:
            self._reset_failures(plan.missing)
        labels = label_names(arguments.get("project_init_label"))
        for inst in plan.missing:  # recorded in provenance (the index's `labels`)
            inst.labels = labels
        run_missing(
            self.store.with_trust([plan.roots[0].cell.project.name]),
            plan.missing,
            mode=parse_mode(mode, where="call") if mode else self.mode,
            max_workers=self.max_workers,
            report=report,
            slurm=self.slurm,
        )
        report.seconds = time.perf_counter() - start
        return plan

    def _reset_failures(self, missing: list[Instance]) -> None:
        for inst in missing:
            cell = inst.cell
            if self.store.reset_failures(cell.project.name, cell.name, inst.key) is not None:
                log.info("%s: failures reset (retry_failed=True); running it again", inst.label)

    def load(self, instance: Instance) -> Contributions:
        """Load a stored instance (e.g. one from `plan(...)`)."""
        return load(self.store, instance)

    def increment(self, result: Contributions, index: int) -> Contributions:
        """Increment `index` (1-based) of the IncrementingCell result `result` came from: the
        same base instance, loaded from the store (`StoreError` if it is not stored)."""
        cell = resolve_cell(result.cell)
        return load(self.store, increment_of(result_instance(self.store, cell, result), index))

    def releases(self, result: Contributions | Instance) -> dict[str, str]:
        """The releases of the resource instances a stored result rests on, directly or through
        its dependencies: {"project.cell@key12": release}, read from its provenance."""
        if isinstance(result, Instance):
            project, name, key = result.cell.project.name, result.cell.name, result.key
        else:
            project, _, name = result.cell.rpartition(".")
            key = result.key
        found = self.store.read_provenance(project, name, key).releases
        return {label: str(release) for label, release in found.items()}

    def observations(self, cell: str | type[Cell], **values: Any) -> list[dict[str, Any]]:
        """The release history of a resource instance, oldest first: one dict per observation
        with `release`, `observed_at`, `source` and `stored` (a result for it is stored)."""
        from further_dagster.core.keys import structural_key

        target = resolve_cell(cell)
        if not target.is_resource:
            raise TypeError(f"{target.full_name} is not a resource cell; it has no releases")
        resolver = ReleaseResolver(self.store, clock=self.clock, history=self._history)
        inst = Resolver(self.graph_for(target), CallContext(release_resolver=lambda c, s: "-"))
        specs = inst.instance(target, values).specs
        skey = structural_key(target, specs)
        records = resolver.history.read(target.project.name, target.name, skey)
        stored = resolver.history_of(target, specs, skey).stored
        return [
            {
                "release": r.release,
                "observed_at": r.observed_at.astimezone(dt.UTC),
                "source": r.source,
                "stored": r.release in stored,
            }
            for r in records
        ]

    # --- the record (SQL index; engine/record.py) ----------------------------------------

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> Any:
        """Run SQL (with `:name` parameters) against the store's index: a pandas DataFrame.
        Tables `instances`, `edges`, `contributions`, `fields`; views `cells` and one per cell,
        `<project>__<cell>`, with its Specs and recorded contributions as columns (README "The
        record"). A failing query raises `IndexQueryError` with the SQL error and the query."""
        return record.query(self.store, sql, params)

    def instances(
        self,
        cell: str | type[Cell],
        where: Mapping[str, Any] | None = None,
        *,
        status: str | None = None,
    ) -> Any:
        """The index rows (a DataFrame) of `cell`'s instances whose Specs fields / recorded
        contributions equal `where`'s values (a list value: any of them), oldest first."""
        return record.instances(self.store, cell, where, status=status)

    def results(
        self, cell: str | type[Cell], where: Mapping[str, Any] | None = None
    ) -> list[Contributions]:
        """The stored results of `cell` matching `where` (as `instances`), loaded and checked."""
        return record.results(self.store, cell, where)

    def explain(self, result: Contributions | Instance | str, *, file: Any = None) -> None:
        """Print the instance tree of a result, Instance or logic key (or unique prefix): cell,
        version, Specs, key, releases, labels, code commit, when and where it was computed,
        and the same for every dependency, from the index."""
        print(record.explain(self.store, result), end="", file=file)


class _CachedPlan:
    """A resolved call, reused while no cell was (re)defined and no cell's logic_version or
    Specs/Opts model changed: resolution is most of the cost of a fully cached call."""

    def __init__(self, roots: list[Instance], instances: list[Instance], swept: bool) -> None:
        self.roots = roots
        self.instances = instances
        self.swept = swept
        self.generation = generation()
        cells = {inst.cell for inst in instances}
        cells.update(d.target for inst in instances if inst.dynamic for d in inst.dynamic.values())
        self.fingerprint = [(c, c.logic_version, c.Specs, c.Opts) for c in cells]

    def valid(self) -> bool:
        return self.generation == generation() and all(
            c.logic_version == lv and c.Specs is s and c.Opts is o
            for c, lv, s, o in self.fingerprint
        )


@contextlib.contextmanager
def _no_gc() -> Iterator[None]:
    """The cyclic garbage collector off (restored after): planning builds an object graph with
    no cycles, which the collector would otherwise traverse again and again as it grows."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
