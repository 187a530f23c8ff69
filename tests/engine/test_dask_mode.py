"""Engine mode DASK: a Session computes the missing instances as tasks on a local cluster."""

import pytest

from further_dagster import Session
from tests.engine import cells  # noqa: F401  (registers engine_demo)

pytestmark = pytest.mark.unit


def test_session_in_dask_mode_computes_each_instance_once(further_tmp_root, calls):
    session = Session(mode="DASK", max_workers=2, progress=False)
    result = session.call("engine_demo.sweep")
    assert result.sizes == [1, 2, 3]
    assert calls.count("base") == 3 and calls.count("sweep") == 1
    # the instances ran in Dask worker processes, not in this one
    import os

    assert {int(c[2]) for c in calls.read()} - {os.getpid()}
    again = session.call("engine_demo.sweep")
    assert again.sizes == [1, 2, 3] and calls.count() == 4
