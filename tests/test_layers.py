"""The import direction of DESIGN.md section 3, checked on the source."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

PACKAGE = Path(__file__).resolve().parents[1] / "further_dagster"

FORBIDDEN = {
    "core": (
        "dagster",
        "submitit",
        "further_dagster.store",
        "further_dagster.engine",
        "further_dagster.slurm",
        "further_dagster.dagster",
    ),
    "store": (
        "dagster",
        "submitit",
        "further_dagster.engine",
        "further_dagster.slurm",
        "further_dagster.dagster",
    ),
    "engine": ("dagster", "further_dagster.dagster"),
    "slurm": ("dagster", "further_dagster.dagster"),
}


def imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layers_import_only_downward(layer):
    bad = []
    for path in sorted((PACKAGE / layer).rglob("*.py")):
        for name in imports(path):
            if any(name == f or name.startswith(f + ".") for f in FORBIDDEN[layer]):
                bad.append(f"{path.relative_to(PACKAGE)} imports {name}")
    assert bad == []


def test_only_compat_imports_dagster_private_modules():
    private = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for name in imports(path):
            if name.startswith("dagster._"):
                private.append(str(path.relative_to(PACKAGE)))
    assert sorted(set(private)) == ["dagster/_compat.py"]


def test_importing_the_package_and_a_session_loads_no_dagster():
    code = (
        "import sys\n"
        "import further_dagster\n"
        "from further_dagster import Session, Cell, Project, VAR\n"
        "import further_dagster.core, further_dagster.store, further_dagster.engine\n"
        "print(sorted(m for m in sys.modules if m == 'dagster' or m.startswith('dagster.')"
        " or m == 'submitit'))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
