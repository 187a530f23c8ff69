"""The README's cell example and notebook session run as written."""

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def python_blocks():
    return re.findall(r"```python\n(.*?)```", README, flags=re.S)


def test_cells_and_session_examples_run(further_tmp_root):
    cells, session_block = python_blocks()[0], python_blocks()[1]
    namespace: dict = {}
    exec(compile(cells, "README:cells", "exec"), namespace)
    exec(compile(session_block, "README:session", "exec"), namespace)
    session = namespace["session"]
    assert len(namespace["report"].norms) == 3
    assert session.last_report is not None
    assert session.plan("study.report").missing == []
