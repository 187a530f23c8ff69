"""Project inits: named configuration bundles (labels) in `project_inits.yaml`.

    fast:
      purpose: "Exploratory mode: coarse thresholds, fast turnaround"
      domain: speed                       # labels of one domain exclude each other
      cell_specs:
        analyzer: {threshold: 0.5, mode: approximate}
      project_specs: {seed: 1}            # project-level params
      freshness: {measurements: present}  # resource instructions, per resource cell
      opts: {analyzer: {verbose: true}}
      called_assignments:                 # route a label of a called project, per calling cell
        cell_quick: {lib: fast}

A label is an instruction, never identity: selecting one sets Specs, project params, Opts and
freshness policies, and only the values it resolves to enter logic keys, so a label that changes
nothing reachable computes nothing new. Several labels merge when they belong to different
domains and do not set the same value; two labels of one domain, or two labels setting one value,
are errors that name both. Every mistake names the file and line.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from further_dagster.core.names import is_identifier
from further_dagster.errors import InitError

FILE_NAME = "project_inits.yaml"
_KEYS = (
    "purpose",
    "domain",
    "cell_specs",
    "project_specs",
    "freshness",
    "opts",
    "called_assignments",
)


@dataclass(frozen=True)
class Label:
    """One label of a project's inits, as written (validated for shape, not yet against cells).

    Attributes:
        name: the label.
        where: `file:line` of its definition.
        purpose, domain: documentation and the exclusion group.
        cell_specs: cell name -> Specs values.
        project_specs: project param -> value.
        freshness: resource cell name -> policy text.
        opts: cell name -> Opts values.
        called_assignments: calling cell name -> {called project: label}.
    """

    name: str
    where: str
    purpose: str = ""
    domain: str | None = None
    cell_specs: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    project_specs: Mapping[str, Any] = field(default_factory=dict)
    freshness: Mapping[str, str] = field(default_factory=dict)
    opts: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    called_assignments: Mapping[str, Mapping[str, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Selection:
    """What a merge of labels sets, per kind (an empty selection sets nothing)."""

    labels: tuple[str, ...] = ()
    cell_specs: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    project_specs: Mapping[str, Any] = field(default_factory=dict)
    freshness: Mapping[str, str] = field(default_factory=dict)
    opts: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    called_assignments: Mapping[str, Mapping[str, str]] = field(default_factory=dict)


class _LineLoader(yaml.SafeLoader):
    """A safe loader that remembers the line of every mapping key it reads."""


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    mapping: dict[Any, Any] = {}
    lines: dict[Any, int] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        mapping[key] = loader.construct_object(value_node, deep=True)
        lines[key] = key_node.start_mark.line + 1
    return _Lined(mapping, lines)


class _Lined(dict[Any, Any]):
    """A dict that knows the line of each of its keys."""

    def __init__(self, values: Mapping[Any, Any], lines: Mapping[Any, int]) -> None:
        super().__init__(values)
        self.lines = dict(lines)


_LineLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)


def _line(mapping: Any, key: Any) -> int | None:
    return getattr(mapping, "lines", {}).get(key)


def parse_inits(text: str, *, source: str = FILE_NAME) -> dict[str, Label]:
    """The labels of a `project_inits.yaml` text (`source` names it in errors)."""
    try:
        data = yaml.load(text, Loader=_LineLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"{source}:{mark.line + 1}" if mark is not None else source
        raise InitError(f"{at}: not valid YAML ({exc}); fix the file's syntax") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InitError(f"{source}: the top level must map label names to their settings")
    labels: dict[str, Label] = {}
    for name, body in data.items():
        where = f"{source}:{_line(data, name) or '?'}"
        if not isinstance(name, str) or not is_identifier(name):
            raise InitError(f"{where}: label {name!r} must be a plain identifier")
        labels[name] = _label(name, body, where, source)
    return labels


def _label(name: str, body: Any, where: str, source: str) -> Label:
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise InitError(f"{where}: label {name!r} must be a mapping of {', '.join(_KEYS)}")
    unknown = sorted(set(body) - set(_KEYS))
    if unknown:
        at = f"{source}:{_line(body, unknown[0]) or '?'}"
        raise InitError(
            f"{at}: label {name!r} has unknown key(s) {unknown}; valid keys: {', '.join(_KEYS)}"
        )

    def nested(key: str, depth: int) -> dict[str, Any]:
        value = body.get(key) or {}
        at = f"{source}:{_line(body, key) or '?'}"
        if not isinstance(value, dict):
            raise InitError(f"{at}: {name}.{key} must be a mapping")
        if depth == 2:
            for inner, values in value.items():
                if not isinstance(values, dict):
                    raise InitError(f"{at}: {name}.{key}.{inner} must be a mapping of values")
        return {str(k): (dict(v) if depth == 2 else v) for k, v in value.items()}

    domain = body.get("domain")
    if domain is not None and not isinstance(domain, str):
        raise InitError(f"{where}: {name}.domain must be a name, got {domain!r}")
    return Label(
        name=name,
        where=where,
        purpose=str(body.get("purpose") or ""),
        domain=domain,
        cell_specs=nested("cell_specs", 2),
        project_specs=nested("project_specs", 1),
        freshness={k: str(v) for k, v in nested("freshness", 1).items()},
        opts=nested("opts", 2),
        called_assignments={
            k: {str(p): str(lbl) for p, lbl in v.items()}
            for k, v in nested("called_assignments", 2).items()
        },
    )


def load_inits(path: str | Path) -> dict[str, Label]:
    """The labels of the file at `path` ({} when it does not exist)."""
    file = Path(path)
    try:
        text = file.read_text()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise InitError(f"{file}: cannot be read ({exc})") from None
    return parse_inits(text, source=str(file))


def check_labels(
    labels: Mapping[str, Label],
    *,
    project: str,
    cells: Mapping[str, Any],
    params: Iterable[str],
    resources: Iterable[str],
) -> None:
    """Every cell, field, param and resource cell a label names exists (an InitError else).

    `cells` maps cell name -> its class (with `Specs` and `Opts` models)."""
    param_names, resource_names = set(params), set(resources)
    for label in labels.values():
        for cell_name, values in label.cell_specs.items():
            _check_fields(label, project, cells, cell_name, values, "Specs")
        for cell_name, values in label.opts.items():
            _check_fields(label, project, cells, cell_name, values, "Opts")
        unknown = sorted(set(label.project_specs) - param_names)
        if unknown:
            raise InitError(
                f"{label.where}: label {label.name!r} sets project param(s) {unknown} that "
                f"project {project!r} does not define; its params are {sorted(param_names)}"
            )
        for resource in label.freshness:
            if resource not in resource_names:
                raise InitError(
                    f"{label.where}: label {label.name!r} sets the freshness of {resource!r}, "
                    f"which is not a resource cell of {project!r} (those are: "
                    f"{sorted(resource_names) or 'none'})"
                )
        for caller in label.called_assignments:
            if caller not in cells:
                raise InitError(
                    f"{label.where}: label {label.name!r} routes labels for cell {caller!r}, "
                    f"which project {project!r} does not have; its cells are {sorted(cells)}"
                )


def _check_fields(
    label: Label, project: str, cells: Mapping[str, Any], cell_name: str, values: Any, what: str
) -> None:
    cell = cells.get(cell_name)
    if cell is None:
        raise InitError(
            f"{label.where}: label {label.name!r} names cell {cell_name!r}, which project "
            f"{project!r} does not have; its cells are {sorted(cells)}"
        )
    fields = getattr(cell, what).model_fields
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise InitError(
            f"{label.where}: label {label.name!r} sets {what} field(s) {unknown} of "
            f"{project}.{cell_name}, which has {sorted(fields) or 'none'}"
        )


def select(labels: Mapping[str, Label], chosen: str | Sequence[str] | None) -> Selection:
    """The merge of the `chosen` labels (a name or a list; None: nothing)."""
    if chosen is None:
        return Selection()
    names = [chosen] if isinstance(chosen, str) else list(chosen)
    picked: list[Label] = []
    for name in names:
        label = labels.get(name)
        if label is None:
            raise InitError(
                f"unknown project_init_label {name!r}; the labels are: "
                f"{', '.join(sorted(labels)) or '(none: no project_inits.yaml)'}"
            )
        picked.append(label)
    domains: dict[str, Label] = {}
    for label in picked:
        if label.domain is None:
            continue
        other = domains.get(label.domain)
        if other is not None and other.name != label.name:
            raise InitError(
                f"labels {other.name!r} ({other.where}) and {label.name!r} ({label.where}) are "
                f"both of domain {label.domain!r}, whose labels exclude each other; pick one"
            )
        domains[label.domain] = label
    return Selection(
        labels=tuple(dict.fromkeys(names)),
        cell_specs=_merge2(picked, "cell_specs"),
        project_specs=_merge1(picked, "project_specs"),
        freshness=_merge1(picked, "freshness"),
        opts=_merge2(picked, "opts"),
        called_assignments=_merge2(picked, "called_assignments"),
    )


def _conflict(first: Label, second: Label, what: str) -> InitError:
    return InitError(
        f"labels {first.name!r} ({first.where}) and {second.name!r} ({second.where}) both set "
        f"{what}; a merge of labels never picks a silent winner: remove it from one of them"
    )


def _merge1(picked: Sequence[Label], kind: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    owner: dict[str, Label] = {}
    for label in picked:
        for key, value in getattr(label, kind).items():
            if key in out and owner[key].name != label.name and out[key] != value:
                raise _conflict(owner[key], label, f"{kind}.{key}")
            out[key], owner[key] = value, label
    return out


def _merge2(picked: Sequence[Label], kind: str) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    owner: dict[tuple[str, str], Label] = {}
    for label in picked:
        for outer, values in getattr(label, kind).items():
            target = out.setdefault(outer, {})
            for key, value in values.items():
                seen = owner.get((outer, key))
                if seen is not None and seen.name != label.name and target[key] != value:
                    raise _conflict(seen, label, f"{kind}.{outer}.{key}")
                target[key], owner[(outer, key)] = value, label
    return out


__all__ = [
    "FILE_NAME",
    "InitError",
    "Label",
    "Selection",
    "check_labels",
    "load_inits",
    "parse_inits",
    "select",
]
