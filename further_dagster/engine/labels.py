"""Labels of `project_inits.yaml` applied to a call: one function for a Session call and a
Dagster code location (its `project_init_label=`, and a run's)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from further_dagster.core.freshness import FreshnessOverrides, normalize_freshness
from further_dagster.core.inits import Selection
from further_dagster.core.instances import CallContext
from further_dagster.core.project import Project, get_project


def with_labels(
    project: Project,
    chosen: str | Sequence[str],
    project_params: Mapping[str, Mapping[str, Any]] | None,
    specs: Mapping[str, Mapping[str, Any]] | None,
    opts: Mapping[str, Mapping[str, Any]] | None,
    freshness: Any,
) -> tuple[
    dict[str, dict[str, Any]],
    dict[str, dict[str, Any]],
    dict[str, dict[str, Any]],
    Any,
    dict[str, Any],
]:
    """The call's arguments with the selected labels of `project` merged in below them, and
    the labels' called assignments ({project: {calling cell: {called project: label}}})."""
    selection = project.select_labels(chosen)
    name = project.address  # what scopes and full names use: lib@1.4 for an archived version
    params = {k: dict(v) for k, v in (project_params or {}).items()}
    params[name] = {**selection.project_specs, **params.get(name, {})}
    merged_specs = {k: dict(v) for k, v in (specs or {}).items()}
    for cell, values in selection.cell_specs.items():
        key = f"{name}.{cell}"
        merged_specs[key] = {**values, **merged_specs.get(key, {})}
    merged_opts = {k: dict(v) for k, v in (opts or {}).items()}
    for cell, values in selection.opts.items():
        key = f"{name}.{cell}"
        merged_opts[key] = {**values, **merged_opts.get(key, {})}
    labelled = _freshness(project, selection, chosen)
    if labelled:
        given = normalize_freshness(freshness, where="freshness=")
        freshness = labelled.merged(given) if given else labelled
    assignments = {name: selection.called_assignments} if selection.called_assignments else {}
    return params, merged_specs, merged_opts, freshness, assignments


def label_freshness(project: Project, chosen: str | Sequence[str] | None) -> FreshnessOverrides:
    """The freshness policies the labels `chosen` of `project` set, their routed labels'
    included (a code location compiled under labels applies them as its default)."""
    if not chosen:
        return FreshnessOverrides()
    return _freshness(project, project.select_labels(chosen), chosen)


def _freshness(
    project: Project, selection: Selection, chosen: str | Sequence[str]
) -> FreshnessOverrides:
    labelled = _routed_freshness(project, selection)
    if not selection.freshness:
        return labelled
    own = {f"{project.address}.{cell}": p for cell, p in selection.freshness.items()}
    return labelled.merged(normalize_freshness(own, where=f"project_init_label {chosen!r}"))


def _routed_freshness(project: Project, selection: Selection) -> FreshnessOverrides:
    """The freshness policies of the labels `selection` routes into called projects (and those
    routed on from there), for the call.

    Freshness is an instruction per resource cell, not a value on a path: a routed label's
    policy applies to that cell wherever the call reaches it. The selected label's own
    policies, then the call's `freshness=`, rank above; between two routes setting one cell,
    the first calling cell (by name) wins.
    """
    found = FreshnessOverrides()
    seen: set[tuple[str, str]] = set()
    pending = [(project, selection)]
    while pending:
        caller, chosen = pending.pop(0)
        for calling in sorted(chosen.called_assignments):
            for called_name, label in sorted(chosen.called_assignments[calling].items()):
                decl = caller.calls.get(called_name)
                called = get_project(
                    called_name,
                    decl.version if decl is not None else None,
                    caller=f"Project({caller.name!r}) label routing {label!r}",
                )
                if (called.address, label) in seen:
                    continue
                seen.add((called.address, label))
                routed = called.select_labels(label)
                if routed.freshness:
                    policies = {f"{called.address}.{c}": p for c, p in routed.freshness.items()}
                    where = f"label {label!r} of {called.address!r}, routed for {calling!r}"
                    found = normalize_freshness(policies, where=where).merged(found)
                pending.append((called, routed))
    return found


def label_context(project: Project, chosen: str | Sequence[str] | None) -> CallContext:
    """The CallContext (params, specs, opts, called assignments) the labels `chosen` of
    `project` set; an empty context for no labels. Freshness policies of the labels are not
    part of it (`label_freshness`)."""
    if not chosen:
        return CallContext()
    params, specs, opts, _, assignments = with_labels(project, chosen, None, None, None, None)
    return CallContext(params=params, specs=specs, opts=opts, assignments=assignments)


def label_names(chosen: str | Sequence[str] | None) -> tuple[str, ...]:
    """`chosen` as a tuple of label names."""
    if not chosen:
        return ()
    return (chosen,) if isinstance(chosen, str) else tuple(chosen)
