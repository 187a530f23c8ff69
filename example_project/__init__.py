"""The example code location (`dagster dev -w workspace.yaml`, `dagster ... -m example_project`)."""

from example_project.cells import example
from further_dagster import build_definitions

defs = build_definitions(example)

__all__ = ["defs", "example"]
