"""Two code locations over the same project in one process, each with its own store root."""

import tempfile
from pathlib import Path

from further_dagster import build_definitions
from further_dagster.dagster import further_executor_def
from tests.dagster.defs_module import dag_demo

# Fixed for the process: a code location's settings are fixed when it is loaded.
BASE = Path(tempfile.mkdtemp(prefix="further-two-roots-"))
ROOT_A, ROOT_B = BASE / "a", BASE / "b"

_in_process = further_executor_def().configured({"inner": "in_process"})
defs_a = build_definitions(dag_demo, root=str(ROOT_A), executor=_in_process)
defs_b = build_definitions(dag_demo, root=str(ROOT_B), executor=_in_process)
