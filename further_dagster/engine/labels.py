"""Labels of `project_inits.yaml` applied to a call: one function for a Session call and a
Dagster code location (its `project_init_label=`, and a run's)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from further_dagster.core.freshness import normalize_freshness
from further_dagster.core.instances import CallContext
from further_dagster.core.project import Project


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
    name = project.name
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
    if selection.freshness:
        labelled = normalize_freshness(
            {f"{name}.{cell}": policy for cell, policy in selection.freshness.items()},
            where=f"project_init_label {chosen!r}",
        )
        given = normalize_freshness(freshness, where="freshness=")
        freshness = labelled.merged(given) if given else labelled
    assignments = {name: selection.called_assignments} if selection.called_assignments else {}
    return params, merged_specs, merged_opts, freshness, assignments


def label_context(project: Project, chosen: str | Sequence[str] | None) -> CallContext:
    """The CallContext (params, specs, opts, called assignments) the labels `chosen` of
    `project` set; an empty context for no labels. Freshness policies of the labels are not
    part of it (see `label_freshness`)."""
    if not chosen:
        return CallContext()
    params, specs, opts, _, assignments = with_labels(project, chosen, None, None, None, None)
    return CallContext(params=params, specs=specs, opts=opts, assignments=assignments)


def label_names(chosen: str | Sequence[str] | None) -> tuple[str, ...]:
    """`chosen` as a tuple of label names."""
    if not chosen:
        return ()
    return (chosen,) if isinstance(chosen, str) else tuple(chosen)
