"""A Dagster Component: further_dagster definitions from a `defs.yaml`.

    # <project>/src/<module>/defs/<name>/defs.yaml
    type: further_dagster.dagster.component.FurtherComponent
    attributes:
      projects: [my_package.cells:study]     # module:attribute of each Project
      root: /shared/further                  # optional: the store root
      mode: LOCAL                            # optional: the default mode of runs
      freshness: present                     # optional: the code location's freshness
      release_sensor_interval: 30            # optional; null leaves the sensor out

builds exactly what `build_definitions(study, root=..., mode=..., freshness=...)` builds, so
`dg list defs`, `dg check defs` and `dg dev` work on a dg project (example_component/).
"""

from __future__ import annotations

import importlib

import dagster as dg

from further_dagster.core.project import Project
from further_dagster.dagster.definitions import build_definitions
from further_dagster.errors import UnknownCellError


def load_project(reference: str) -> Project:
    """The Project named by `module:attribute` (or `module.attribute`)."""
    module_name, sep, attribute = reference.partition(":")
    if not sep:
        module_name, _, attribute = reference.rpartition(".")
    if not module_name or not attribute:
        raise UnknownCellError(
            f"projects entry {reference!r}: write `module:attribute` of a Project, e.g. "
            "`my_package.cells:study`"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UnknownCellError(
            f"projects entry {reference!r}: cannot import {module_name!r} ({exc}); is the "
            "package installed in the code location's environment?"
        ) from exc
    found = getattr(module, attribute, None)
    if not isinstance(found, Project):
        raise UnknownCellError(
            f"projects entry {reference!r}: {module_name}.{attribute} is "
            f"{type(found).__name__}, not a further_dagster Project"
        )
    return found


class FurtherComponent(dg.Component, dg.Model, dg.Resolvable):
    """further_dagster definitions of the listed projects (see the module docstring)."""

    projects: list[str]
    root: str | None = None
    mode: str = "LOCAL"
    freshness: str | None = None
    release_sensor_interval: int | None = 30

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        return build_definitions(
            *(load_project(p) for p in self.projects),
            root=self.root,
            mode=self.mode,
            freshness=self.freshness,
            release_sensor_interval=self.release_sensor_interval,
        )


__all__ = ["FurtherComponent", "load_project"]
