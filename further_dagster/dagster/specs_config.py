"""A cell asset's run config, generated from its Specs (and Opts): pick an instance per run.

In the Launchpad or with `--config-json`, `{"n_samples": 50}` under the asset's op selects the
instance with those Specs (every other field keeps the value the code location resolved):
it is materialized and recorded under its own logic key, so a Session calling the cell with
the same values finds it stored. Opts go under `opts` (never part of a key), labels of the
project's `project_inits.yaml` under `project_init_label` (a name or a list, replacing the code
location's labels for this asset's instances), transformers (core/iterative.py) under
`transformers`: `{"fits/data": "Standardize"}` or `{"fits/data": {"transformer": "Standardize",
"specs": {"factor": 0.25}}}`, by the name registered on the cell's project or as an importable
"module:Class". Each field is typed from its annotation, so a wrong field or type fails before
the run, naming it.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping
from typing import Any

import dagster as dg
from pydantic import BaseModel

from further_dagster.core.cell import Cell
from further_dagster.core.iterative import Increments, Transformer, find_transformer
from further_dagster.core.project import Project

OPTS_KEY = "opts"
LABEL_KEY = "project_init_label"
INCREMENTS_KEY = "increments"
TRANSFORMERS_KEY = "transformers"
_TRANSFORMERS_FIELD: list[dg.Field] = []  # one Field shared by every asset (cheap to load)


def _transformers_field() -> dg.Field:
    if not _TRANSFORMERS_FIELD:
        one = dg.ScalarUnion(
            scalar_type=dg.String,
            non_scalar_schema={
                "transformer": dg.Field(dg.String, description="its name or module:Class"),
                "specs": dg.Field(dg.Permissive(), is_required=False, description="its Specs"),
            },
        )
        _TRANSFORMERS_FIELD.append(
            dg.Field(
                dg.Map(str, one),
                is_required=False,
                description=(
                    "transformers for this run, by edge path: {'fits/data': 'Standardize'} or "
                    "{'fits/data': {'transformer': 'Standardize', 'specs': {...}}}; a name "
                    "registered on the project (class T(Transformer, project=p)) or "
                    "'module:Class'"
                ),
            )
        )
    return _TRANSFORMERS_FIELD[0]


def _config_type(annotation: Any) -> Any:
    """The Dagster config type of a pydantic field annotation (Any where none fits)."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        inner = _config_type(rest[0]) if len(rest) == 1 else dg.Any
        return dg.Noneable(inner) if len(rest) < len(args) else inner
    if annotation is bool:
        return dg.Bool
    if annotation is int:
        return dg.Int
    if annotation is float:
        return dg.Float
    if annotation is str:
        return dg.String
    if origin in (list, tuple, set, frozenset) and args:
        item = args[0] if origin is not tuple or len(args) == 2 and args[1] is Ellipsis else None
        return [_config_type(item)] if item is not None else dg.Any
    if origin is dict or annotation is dict:
        return dg.Permissive()
    return dg.Any


def _fields(model: type[BaseModel]) -> dict[str, dg.Field]:
    return {
        name: dg.Field(
            _config_type(info.annotation),
            is_required=False,
            description=info.description or f"{model.__qualname__}.{name}",
        )
        for name, info in model.model_fields.items()
    }


def specs_config_schema(cell: type[Cell]) -> dict[str, dg.Field] | None:
    """The op config schema of `cell`'s asset: its Specs fields, and `opts` for its Opts (all
    optional: what is not given keeps the code location's value). None when it has neither."""
    return _schema_with(cell, _label_field(cell.project)) or None


def _label_field(project: Project) -> dg.Field | None:
    if project.inits_path is None or not project.inits_path.exists():
        return None
    return dg.Field(
        dg.Any,
        is_required=False,
        description=(
            "label(s) of the project's project_inits.yaml for this run: a name or a "
            f"list of names ({', '.join(sorted(project.labels())) or 'none'})"
        ),
    )


class SchemaCache:
    """The op config schemas of one build, one `dg.Field` per distinct schema: cells whose
    schemas are alike (generated cells, a sweep's copies) share it, so Dagster converts and
    hashes it once instead of once per asset. One per `build_definitions` call, so a changed
    project_inits.yaml is seen by the next build."""

    def __init__(self) -> None:
        self._fields: dict[Any, dg.Field | None] = {}
        self._labels: dict[int, tuple[Project, dg.Field | None]] = {}

    def _label(self, project: Project) -> dg.Field | None:
        known = self._labels.get(id(project))
        if known is None or known[0] is not project:
            known = (project, _label_field(project))
            self._labels[id(project)] = known
        return known[1]

    def field_for(self, cell: type[Cell]) -> dg.Field | None:
        """The op config field of `cell`'s asset (None when it has no config)."""
        label = self._label(cell.project)
        try:
            key = (
                _signature(cell.Specs),
                _signature(cell.Opts),
                cell.is_incrementing,
                bool(cell.req_cells),
                id(label),
            )
            hash(key)
        except TypeError:  # an unhashable annotation: this cell's schema is its own
            key = None
        if key is not None and key in self._fields:
            return self._fields[key]
        schema = _schema_with(cell, label)
        # what Dagster makes of a dict schema (is_required inferred alike)
        field = dg.Field(schema) if schema else None
        if key is not None:
            self._fields[key] = field
        return field


def _signature(model: type[BaseModel]) -> tuple[Any, ...]:
    # what `_fields` reads of a model: equal signatures give equal config fields
    return tuple(
        (name, info.annotation, info.description or f"{model.__qualname__}.{name}")
        for name, info in model.model_fields.items()
    )


def _schema_with(cell: type[Cell], label: dg.Field | None) -> dict[str, dg.Field]:
    schema = _fields(cell.Specs)
    opts = _fields(cell.Opts)
    if opts and OPTS_KEY not in schema:
        schema[OPTS_KEY] = dg.Field(
            opts, is_required=False, description="Opts (never part of the logic key)"
        )
    if cell.is_incrementing and INCREMENTS_KEY not in schema:
        schema[INCREMENTS_KEY] = dg.Field(
            dg.Permissive(),
            is_required=False,
            description=(
                "which increment to run to: one of {exactly: N}, {at_least: N}, {best: true}, "
                "{more: K} (default: the cell's own instruction)"
            ),
        )
    if cell.req_cells and TRANSFORMERS_KEY not in schema:
        schema[TRANSFORMERS_KEY] = _transformers_field()
    if LABEL_KEY not in schema and label is not None:
        schema[LABEL_KEY] = label
    return schema


def config_increments(cell: type[Cell], config: Mapping[str, Any] | None) -> Increments | None:
    """The `increments` instruction an op config gives an incrementing cell (None: none)."""
    given = (config or {}).get(INCREMENTS_KEY)
    if not cell.is_incrementing or INCREMENTS_KEY in cell.Specs.model_fields or given is None:
        return None
    return Increments(**dict(given))


def config_transformers(
    cell: type[Cell], config: Mapping[str, Any] | None
) -> dict[str, Transformer] | None:
    """The transformers (edge path -> instance) an op config gives `cell`'s instances (None:
    none).

    Raises:
        TransformerError: a name neither registered on the cell's project nor importable
            (the message lists the project's transformers).
        SpecsValidationError: `specs` the transformer's Specs refuse.
    """
    given = (config or {}).get(TRANSFORMERS_KEY)
    if not given or TRANSFORMERS_KEY in cell.Specs.model_fields:
        return None
    found: dict[str, Transformer] = {}
    for path, chosen in dict(given).items():
        where = f"{cell.full_name}: op config {TRANSFORMERS_KEY}[{path!r}]"
        if isinstance(chosen, str):
            name, specs = chosen, {}
        else:
            name, specs = str(chosen["transformer"]), dict(chosen.get("specs") or {})
        found[path] = find_transformer(name, cell.project, where)(**specs)
    return found


def split_config(
    cell: type[Cell], config: Mapping[str, Any] | None
) -> tuple[dict[str, Any], dict[str, Any], tuple[str, ...] | None]:
    """(Specs values, Opts values, labels or None) given in an op config (its `increments`
    and `transformers`: `config_increments`, `config_transformers`)."""
    values = dict(config or {})
    if TRANSFORMERS_KEY not in cell.Specs.model_fields:
        values.pop(TRANSFORMERS_KEY, None)
    if cell.is_incrementing and INCREMENTS_KEY not in cell.Specs.model_fields:
        values.pop(INCREMENTS_KEY, None)
    opts = values.pop(OPTS_KEY, None) if OPTS_KEY not in cell.Specs.model_fields else None
    labels = values.pop(LABEL_KEY, None) if LABEL_KEY not in cell.Specs.model_fields else None
    if labels is not None:
        labels = (labels,) if isinstance(labels, str) else tuple(str(x) for x in labels)
    return values, dict(opts or {}), labels


def op_config(run_config: Mapping[str, Any] | None, step_key: str) -> Mapping[str, Any]:
    """`ops.<step>.config` of a run config (an asset's op is named like its step)."""
    ops = (run_config or {}).get("ops") or {}
    return (ops.get(step_key) or {}).get("config") or {}


__all__ = [
    "INCREMENTS_KEY",
    "LABEL_KEY",
    "OPTS_KEY",
    "TRANSFORMERS_KEY",
    "config_increments",
    "config_transformers",
    "op_config",
    "SchemaCache",
    "specs_config_schema",
    "split_config",
]
