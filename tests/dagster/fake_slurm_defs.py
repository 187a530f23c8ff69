"""A code location whose SLURM runs go to `FakeSlurmClient` (threads instead of Slurm jobs).

Every process that loads it (the test process, a local fan-out step process) gets its own fake:
a step submitted as a "job" runs its `dagster api execute_step` command in a thread of the
process that submitted it.
"""

from further_dagster import build_definitions
from further_dagster.testing.slurm import FakeSlurmClient
from tests.dagster.defs_module import dag_demo

FAKE = FakeSlurmClient()

defs = build_definitions(dag_demo, mode="SLURM", slurm_client=FAKE)
