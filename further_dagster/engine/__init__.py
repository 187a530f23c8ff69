"""The engine: plan a call, compute what is missing through the store, in the chosen mode."""

from further_dagster.engine.compute import ensure, load
from further_dagster.engine.modes import Mode, effective_mode, parse_mode
from further_dagster.engine.plan import Plan
from further_dagster.engine.scheduler import RunReport, run_missing
from further_dagster.engine.session import Session

__all__ = [
    "Mode",
    "Plan",
    "RunReport",
    "Session",
    "effective_mode",
    "ensure",
    "load",
    "parse_mode",
    "run_missing",
]
