"""The README's cell example and notebook session run as written."""

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def python_blocks():
    return re.findall(r"```python\n(.*?)```", README, flags=re.S)


def test_cells_and_session_examples_run(further_tmp_root, further_registry):
    cells, session_block = python_blocks()[0], python_blocks()[1]
    namespace: dict = {}
    exec(compile(cells, "README:cells", "exec"), namespace)
    exec(compile(session_block, "README:session", "exec"), namespace)
    session = namespace["session"]
    assert len(namespace["report"].norms) == 3
    assert session.last_report is not None
    assert session.plan("study.report").missing == []


def test_parameter_section_example_runs(further_tmp_root, further_registry):
    blocks = python_blocks()
    namespace: dict = {}
    exec(compile(blocks[0], "README:cells", "exec"), namespace)
    exec(compile(blocks[1], "README:session", "exec"), namespace)
    (search,) = [b for b in blocks if "class Search(" in b]
    exec(compile(search, "README:parameters", "exec"), namespace)
    session = namespace["session"]
    assert namespace["best"] in (0.1, 1.0, 10.0)
    result = session.call("study.search")
    calls = session.store.read_provenance("study", "search", result.key).extra["runtime_calls"]
    assert [c["values"]["alpha"] for c in calls] == [0.1, 1.0, 10.0]
    # the addressed path reached the data under the fits, and nothing else
    small = namespace["small"]
    assert small.key != namespace["report"].key
    plan = session.plan("study.report", addressed={"fits/data": {"n_samples": 50}})
    sizes = {i.specs.n_samples for i in plan.instances if i.cell.name == "raw_data"}
    assert sizes == {50}
