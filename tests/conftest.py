import pytest


@pytest.fixture
def calls(tmp_path, monkeypatch):
    """Path of the make() call log; `calls.read()` lists (cell, key, pid, thread)."""
    path = tmp_path / "calls.log"
    monkeypatch.setenv("FURTHER_TEST_CALLS", str(path))

    class Calls:
        def read(self):
            if not path.exists():
                return []
            return [tuple(line.split()) for line in path.read_text().splitlines()]

        def count(self, cell=None):
            return len([c for c in self.read() if cell is None or c[0] == cell])

    return Calls()
