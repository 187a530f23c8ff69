"""What a cell asks of Slurm: `SlurmSpec`, and `merge` of the layers that set it.

A `SlurmSpec` names resources, not sbatch flags: `render.py` turns it into submitit parameters.
Layers merge field by field in one order (later wins), and only fields a layer set explicitly
override earlier ones:

    launcher defaults  <  executor run config  <  per-cell SlurmSpec
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from further_dagster.errors import SpecsValidationError

__all__ = ["SlurmSpec", "merge"]

# sbatch options that a SlurmSpec field or submitit itself owns; `extra` may not set them.
_OWNED_OPTIONS: dict[str, str] = {
    "partition": "use the `partition` field",
    "cpus-per-task": "use the `cpus` field",
    "gres": "use the `gpus` field",
    "gpus": "use the `gpus` field",
    "gpus-per-node": "use the `gpus` field",
    "mem": "use the `mem_gb` field",
    "time": "use the `time_min` field",
    "job-name": "pass job_name= to the submit functions",
    "output": "submitit writes job output into its folder",
    "error": "submitit writes job output into its folder",
    "open-mode": "submitit needs append mode",
    "array": "use submit_batch() for job arrays",
    "signal": "submitit relies on its own USR2 signal for timeouts and preemption",
}
_OPTION_NAME = re.compile(r"^[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*$")


class SlurmSpec(BaseModel):
    """Resources one Slurm job asks for.

    Attributes:
        partition: Slurm partition; None uses the cluster's default partition.
        cpus: CPUs for the one task (`--cpus-per-task`).
        gpus: GPUs on the node (`--gres=gpu:N`); 0 asks for none.
        mem_gb: memory for the job (`--mem`); None uses the partition's default.
        time_min: time limit in minutes (`--time`).
        extra: raw sbatch options, name -> value, e.g. `{"qos": "low", "exclusive": ""}` (an
            empty value gives a bare flag). Names are stored with dashes (`mail_type` ->
            `mail-type`). Options a field or submitit owns are refused.
        fallbacks: alternatives tried in order when sbatch refuses this spec at submit. Each one
            overrides only the fields it sets explicitly, on top of this spec.

    Unknown field names fail at once with `SpecsValidationError`, listing every valid field
    with its default; so do invalid values.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    partition: str | None = Field(
        default=None, min_length=1, description="partition; None = the cluster's default"
    )
    cpus: int = Field(default=1, ge=1, description="CPUs for the task (--cpus-per-task)")
    gpus: int = Field(default=0, ge=0, description="GPUs on the node (--gres=gpu:N)")
    mem_gb: float | None = Field(
        default=None, gt=0, description="memory in GB (--mem); None = partition default"
    )
    time_min: int = Field(default=60, ge=1, description="time limit in minutes (--time)")
    extra: dict[str, str] = Field(
        default_factory=dict, description="raw sbatch options, e.g. {'qos': 'low'}"
    )
    fallbacks: tuple[SlurmSpec, ...] = Field(
        default=(), description="specs tried in order when sbatch refuses this one"
    )

    def __init__(self, /, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            problems = "\n".join(
                f"  - {'.'.join(str(p) for p in err['loc']) or '(spec)'} = {err['input']!r}: "
                f"{err['msg'].removeprefix('Value error, ')}"
                for err in exc.errors()
            )
            raise SpecsValidationError(
                f"invalid SlurmSpec:\n{problems}\n{_valid_fields_text()}"
            ) from exc

    @model_validator(mode="before")
    @classmethod
    def _refuse_unknown_fields(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            unknown = sorted(str(k) for k in data if k not in cls.model_fields)
            if unknown:
                # Not a ValueError: pydantic lets it through unwrapped, also from nested specs.
                raise SpecsValidationError(
                    f"SlurmSpec got unknown field(s) {unknown}.\n{_valid_fields_text()}"
                )
        return data

    @field_validator("extra")
    @classmethod
    def _check_extra(cls, extra: dict[str, str]) -> dict[str, str]:
        checked: dict[str, str] = {}
        for raw_name, value in extra.items():
            name = raw_name.lstrip("-")
            if not _OPTION_NAME.match(name):
                raise ValueError(
                    f"extra option {raw_name!r} is not an sbatch long option name "
                    "(lowercase letters, digits, '-' or '_', e.g. 'qos' or 'mail-type')"
                )
            canonical = name.replace("_", "-")
            if canonical in _OWNED_OPTIONS:
                raise ValueError(
                    f"extra option {raw_name!r} cannot be set here: {_OWNED_OPTIONS[canonical]}"
                )
            if canonical in checked:
                raise ValueError(f"extra option {raw_name!r} is given twice")
            checked[canonical] = value
        return checked

    @field_validator("fallbacks")
    @classmethod
    def _flat_fallbacks(cls, fallbacks: tuple[SlurmSpec, ...]) -> tuple[SlurmSpec, ...]:
        if any(f.fallbacks for f in fallbacks):
            raise ValueError("a fallback spec cannot have fallbacks of its own; list them all")
        return fallbacks

    def overrides(self) -> dict[str, Any]:
        """The fields this spec set explicitly, as a dict (what it overrides in `merge`)."""
        return {name: getattr(self, name) for name in sorted(self.model_fields_set)}

    def attempts(self) -> list[SlurmSpec]:
        """This spec without fallbacks, then each fallback merged on top of it, in order."""
        base = SlurmSpec(**{k: v for k, v in self.overrides().items() if k != "fallbacks"})
        return [base, *(merge(base, fallback) for fallback in self.fallbacks)]


def _valid_fields_text() -> str:
    lines = ["Valid SlurmSpec fields are:"]
    for name, info in SlurmSpec.model_fields.items():
        default = info.get_default(call_default_factory=True)
        lines.append(f"  - {name} (default: {default!r}): {info.description}")
    return "\n".join(lines)


def merge(*layers: SlurmSpec | Mapping[str, Any] | None) -> SlurmSpec:
    """Merge spec layers, lowest precedence first; later layers win field by field.

    Only fields a layer set explicitly (pydantic's `model_fields_set`) override earlier layers,
    so `SlurmSpec(cpus=4)` on a cell keeps the partition the executor config chose. `extra`
    merges option by option. A mapping is validated as a `SlurmSpec`; None layers are skipped.
    The result's `model_fields_set` is the union of the layers', so it can be merged again.

    Args:
        *layers: e.g. `merge(launcher_defaults, executor_run_config, cell_spec)`.

    Returns:
        The merged `SlurmSpec`.

    Raises:
        SpecsValidationError: a mapping layer has an unknown field or an invalid value.
    """
    fields: dict[str, Any] = {}
    for layer in layers:
        if layer is None:
            continue
        spec = layer if isinstance(layer, SlurmSpec) else SlurmSpec(**dict(layer))
        for name, value in spec.overrides().items():
            if name == "extra":
                fields["extra"] = {**fields.get("extra", {}), **value}
            else:
                fields[name] = value
    return SlurmSpec(**fields)
