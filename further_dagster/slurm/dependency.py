"""`--dependency` of a submission: which jobs or array tasks it waits for.

Two kinds are used (Slurm's names): `afterok` (start once every listed job, array task
`<id>_<index>` or whole array `<id>` has completed successfully) and `aftercorr` (task i of
this array starts once task i of each listed array has). A dependency that can no longer be
met (a listed job failed or was cancelled) leaves the job PENDING for good, reason
`DependencyNeverSatisfied`: the submitter cancels it (engine/backends/slurm.py does).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Dependency"]


@dataclass(frozen=True)
class Dependency:
    """What a submission waits for.

    Attributes:
        afterok: job ids, array task ids `<id>_<index>`, or array ids (every task).
        aftercorr: array ids whose task i each task i of this array waits for.
    """

    afterok: tuple[str, ...] = ()
    aftercorr: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.afterok or self.aftercorr)

    def sbatch(self) -> str:
        """The value of `--dependency` ("afterok:12_0:12_3,aftercorr:13"); both must hold."""
        parts = []
        if self.afterok:
            parts.append("afterok:" + ":".join(self.afterok))
        if self.aftercorr:
            parts.append("aftercorr:" + ":".join(self.aftercorr))
        return ",".join(parts)
