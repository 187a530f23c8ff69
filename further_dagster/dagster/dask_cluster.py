"""DASK mode: dagster-dask's executor, on a local cluster unless configured otherwise.

`ModeExecutor` wraps it in `SkipCachedExecutor` and hands it a plan context that names it (its
`execute` checks that). The `cluster` config is dagster-dask's own: `{local: {n_workers: 2}}`,
`{existing: {address: "tcp://..."}}`, or any dask-jobqueue cluster it supports.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["dask_inner"]


def dask_inner(config: Mapping[str, Any]) -> Any:
    """dagster-dask's `DaskExecutor` for `{"cluster": {kind: {...}}}` (default a local one)."""
    from dagster_dask.executor import DaskExecutor

    cluster = dict(config.get("cluster") or {"local": {}})
    if len(cluster) != 1:
        raise ValueError(
            f"dask.cluster must name exactly one cluster kind (local, existing, slurm, ...), got "
            f"{sorted(cluster)}"
        )
    ((kind, options),) = cluster.items()
    return DaskExecutor(kind, dict(options or {}))
