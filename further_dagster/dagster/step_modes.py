"""A run's mode and a step's: what the executor and the asset body both read.

Kept apart from `modes.py` (the executor) so the asset body can import it without a cycle.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from further_dagster.dagster.slurm_config import ARRAY_TAG_PREFIX
from further_dagster.engine.modes import Mode, parse_mode
from further_dagster.engine.backends.slurm import SlurmSettings, Submission

__all__ = ["MODE_TAG", "STEP_MODE_ENV", "run_mode", "step_mode", "step_slurm_settings"]

MODE_TAG = "further/mode"
STEP_MODE_ENV = "FURTHER_STEP_MODE"


def run_mode(
    tags: Mapping[str, str], run_config: Mapping[str, Any] | None, default: str | Mode
) -> Mode:
    """A run's mode (ceiling): tag `further/mode` > executor config `mode` > `default`."""
    if tags.get(MODE_TAG):
        return parse_mode(tags[MODE_TAG], where=f"run tag {MODE_TAG}")
    execution = (run_config or {}).get("execution") or {}
    config = execution.get("config") or {}
    if config.get("mode"):
        return parse_mode(config["mode"], where="executor run config `mode`")
    return parse_mode(default, where="build_definitions(mode=...)")


def step_mode(context: Any, default: str | Mode) -> Mode:
    """The ceiling for the instances of the step running now.

    `FURTHER_STEP_MODE` is set by the Slurm step handler for the processes it starts: INLINE
    inside a step's own Slurm job (the job is the instance's allocation), SLURM in a step that
    fans out as a job array. Elsewhere the run's mode applies.
    """
    forced = os.environ.get(STEP_MODE_ENV)
    if forced:
        return parse_mode(forced, where=STEP_MODE_ENV)
    run = context.run
    return run_mode(run.tags, run.run_config, default)


def step_slurm_settings(context: Any) -> SlurmSettings:
    """Engine Slurm settings for this step: from the environment the step handler set; each
    submission is logged to the step's event log and its job ids are recorded in the run's
    tags (`further/slurm_array/<step key>`), where terminate and a restarted daemon find them."""
    instance, run_id = context.instance, context.run.run_id
    step_key = context.get_step_execution_context().step.key
    tag = f"{ARRAY_TAG_PREFIX}{step_key}"

    def record(submission: Submission) -> None:
        run = instance.get_run_by_id(run_id)
        known = [i for i in ((run.tags.get(tag) or "") if run else "").split(",") if i]
        parents = sorted({j.split("_")[0] for j in submission.job_ids} - set(known))
        instance.add_run_tags(run_id, {tag: ",".join([*known, *parents])})
        kind = "one job array" if submission.array else "one job"
        context.log.info(
            f"further: submitted {len(submission.job_ids)} instance(s) of {submission.cell} to "
            f"Slurm as {kind} {', '.join(parents)} in {submission.seconds:.3f}s"
        )

    return SlurmSettings.from_env(on_submit=record)
