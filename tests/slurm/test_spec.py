"""SlurmSpec validation, the merge order launcher < executor config < cell, and the table of
Slurm job states (pure: no cluster, no submitit)."""

from __future__ import annotations

import subprocess
import sys

import pydantic
import pytest

from further_dagster.errors import SpecsValidationError
from further_dagster.slurm import SlurmSpec, merge, states, submitit_parameters

pytestmark = pytest.mark.unit

FIELDS_WITH_DEFAULTS = {
    "partition": "None",
    "cpus": "1",
    "gpus": "0",
    "mem_gb": "None",
    "time_min": "60",
    "extra": "{}",
    "fallbacks": "()",
}


def test_defaults() -> None:
    spec = SlurmSpec()
    assert (spec.partition, spec.cpus, spec.gpus, spec.mem_gb, spec.time_min) == (
        None,
        1,
        0,
        None,
        60,
    )
    assert spec.extra == {} and spec.fallbacks == ()
    assert spec.model_fields_set == set()


def test_unknown_field_lists_every_valid_field_with_its_default() -> None:
    with pytest.raises(SpecsValidationError) as err:
        SlurmSpec(cpu=4, partion="gpu")  # type: ignore[call-arg]
    message = str(err.value)
    assert "['cpu', 'partion']" in message
    for name, default in FIELDS_WITH_DEFAULTS.items():
        assert f"  - {name} (default: {default})" in message


def test_unknown_field_in_a_nested_fallback_fails_the_same_way() -> None:
    with pytest.raises(SpecsValidationError, match=r"unknown field\(s\) \['gpu'\]"):
        SlurmSpec(fallbacks=({"gpu": 1},))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("field", "value"),
    [("cpus", 0), ("gpus", -1), ("mem_gb", 0), ("time_min", 0), ("partition", "")],
)
def test_invalid_values_name_the_field_and_value(field: str, value: object) -> None:
    with pytest.raises(SpecsValidationError) as err:
        SlurmSpec(**{field: value})
    assert f"  - {field} = {value!r}: " in str(err.value)
    assert "Valid SlurmSpec fields are:" in str(err.value)


def test_frozen() -> None:
    spec = SlurmSpec(cpus=2)
    with pytest.raises(pydantic.ValidationError):
        spec.cpus = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("option", "hint"),
    [
        ("partition", "`partition` field"),
        ("cpus_per_task", "`cpus` field"),
        ("gres", "`gpus` field"),
        ("mem", "`mem_gb` field"),
        ("time", "`time_min` field"),
        ("array", "submit_batch"),
        ("--output", "submitit"),
    ],
)
def test_extra_refuses_options_a_field_or_submitit_owns(option: str, hint: str) -> None:
    with pytest.raises(SpecsValidationError, match=hint):
        SlurmSpec(extra={option: "x"})


def test_extra_names_are_canonical_and_checked() -> None:
    assert SlurmSpec(extra={"mail_type": "END", "--qos": "low"}).extra == {
        "mail-type": "END",
        "qos": "low",
    }
    with pytest.raises(SpecsValidationError, match="given twice"):
        SlurmSpec(extra={"mail_type": "END", "mail-type": "FAIL"})
    with pytest.raises(SpecsValidationError, match="not an sbatch long option"):
        SlurmSpec(extra={"Bad Name": "x"})


def test_fallbacks_cannot_nest() -> None:
    with pytest.raises(SpecsValidationError, match="cannot have fallbacks"):
        SlurmSpec(fallbacks=(SlurmSpec(fallbacks=(SlurmSpec(),)),))


def test_attempts_overlay_each_fallback_on_the_spec() -> None:
    spec = SlurmSpec(
        partition="gpu",
        gpus=2,
        time_min=30,
        fallbacks=(SlurmSpec(gpus=1), SlurmSpec(partition="debug", gpus=0)),
    )
    assert [(a.partition, a.gpus, a.time_min, a.fallbacks) for a in spec.attempts()] == [
        ("gpu", 2, 30, ()),
        ("gpu", 1, 30, ()),
        ("debug", 0, 30, ()),
    ]


def test_merge_precedence_field_by_field() -> None:
    launcher = SlurmSpec(partition="debug", time_min=120, mem_gb=4, extra={"qos": "normal"})
    run_config = {"partition": "gpu", "gpus": 1, "extra": {"mail-type": "FAIL"}}
    cell = SlurmSpec(cpus=8, extra={"qos": "high"})
    merged = merge(launcher, run_config, cell)
    assert merged.partition == "gpu"  # run config beats launcher
    assert merged.gpus == 1
    assert merged.cpus == 8  # cell
    assert merged.time_min == 120 and merged.mem_gb == 4  # launcher, untouched by later layers
    assert merged.extra == {"qos": "high", "mail-type": "FAIL"}  # option by option


def test_merge_only_explicit_fields_override() -> None:
    executor = SlurmSpec(partition="gpu", gpus=2)
    # cpus=1 is the default, but set explicitly; partition is not set, so it is kept
    assert merge(executor, SlurmSpec(cpus=1)).partition == "gpu"
    # explicitly setting a default value does override
    assert merge(executor, SlurmSpec(gpus=0)).gpus == 0
    assert merge(executor, SlurmSpec(partition=None)).partition is None


def test_merge_result_can_be_merged_again() -> None:
    first = merge(SlurmSpec(partition="gpu"), SlurmSpec(cpus=4))
    assert first.model_fields_set == {"partition", "cpus"}
    again = merge(SlurmSpec(partition="high", cpus=2, time_min=5), first)
    assert (again.partition, again.cpus, again.time_min) == ("gpu", 4, 5)


def test_merge_skips_none_and_validates_mappings() -> None:
    assert merge(None, SlurmSpec(cpus=3), None).cpus == 3
    assert merge() == SlurmSpec()
    with pytest.raises(SpecsValidationError, match="unknown field"):
        merge({"cpus_per_task": 2})


def test_merge_later_fallbacks_replace_earlier_ones() -> None:
    merged = merge(
        SlurmSpec(fallbacks=(SlurmSpec(cpus=1),)), SlurmSpec(fallbacks=(SlurmSpec(cpus=2),))
    )
    assert merged.fallbacks == (SlurmSpec(cpus=2),)


def test_submitit_parameters() -> None:
    assert submitit_parameters(SlurmSpec()) == {"cpus_per_task": 1, "timeout_min": 60}
    spec = SlurmSpec(
        partition="gpu", cpus=4, gpus=2, mem_gb=1.5, time_min=5, extra={"qos": "x", "exclusive": ""}
    )
    assert submitit_parameters(spec) == {
        "cpus_per_task": 4,
        "timeout_min": 5,
        "slurm_partition": "gpu",
        "slurm_gres": "gpu:2",
        "mem_gb": 1.5,
        "slurm_additional_parameters": {"exclusive": True, "qos": "x"},
    }


def test_importing_the_slurm_package_and_a_spec_loads_no_submitit() -> None:
    code = (
        "import sys\n"
        "import further_dagster.slurm\n"
        "from further_dagster.slurm import SlurmSpec, merge, states\n"
        "SlurmSpec(cpus=2)\n"
        "print('submitit' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_state_table_gives_each_state_one_meaning() -> None:
    assert len(states.PRIORITY) == len(set(states.PRIORITY))
    assert states.LIVE_STATES.isdisjoint(states.ENDED_STATES)
    assert {"PENDING", "RUNNING", "REQUEUED", "SUSPENDED", "UNKNOWN"} <= states.LIVE_STATES
    assert {"COMPLETED", "FAILED", "TIMEOUT", "CANCELLED", "OUT_OF_MEMORY", "NODE_FAIL"} <= (
        states.ENDED_STATES
    )
    assert states.explain("TIMEOUT") == "timed out (raise SlurmSpec.time_min)"
    assert states.explain("OUT_OF_MEMORY") == "ran out of memory (raise SlurmSpec.mem_gb)"
    assert states.explain("CANCELLED") == "was cancelled (scancel, or by an administrator)"
    assert states.explain("NEW_IN_SLURM_99") == "ended NEW_IN_SLURM_99"
    assert not states.is_live("NEW_IN_SLURM_99") and not states.is_ended("NEW_IN_SLURM_99")


@pytest.mark.parametrize(
    ("tasks", "summary"),
    [
        (["COMPLETED", "RUNNING", "PENDING"], "RUNNING"),
        (["COMPLETED", "PENDING"], "PENDING"),
        (["COMPLETED", "FAILED", "CANCELLED"], "FAILED"),
        (["COMPLETED", "COMPLETED"], "COMPLETED"),
        (["ZZZ", "AAA"], "AAA"),
        ([], "UNKNOWN"),
    ],
)
def test_an_array_is_summarised_by_its_most_telling_task(tasks: list[str], summary: str) -> None:
    assert states.summarize(tasks) == summary
