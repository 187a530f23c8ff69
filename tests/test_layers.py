"""The import direction of DESIGN.md section 3, checked on the source.

    errors, settings  <  core  <  store  <  slurm  <  engine  <  dagster

A layer imports only layers to its left (and the standard library and its own third-party
packages); `testing/` and the package root may import anything. Inside the layers: only
`dagster/_compat.py` imports Dagster's private modules and only `slurm/_submitit.py` imports
submitit.
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

PACKAGE = Path(__file__).resolve().parents[1] / "further_dagster"

ORDER = ["core", "store", "slurm", "engine", "dagster"]
LEAVES = ["further_dagster.errors", "further_dagster.settings", "further_dagster._validate"]
# Third-party packages a layer must never import, whatever its place in the order.
THIRD_PARTY = {
    "core": ("dagster", "submitit", "distributed", "dagster_dask"),
    "store": ("dagster", "submitit", "distributed", "dagster_dask"),
    "slurm": ("dagster", "distributed", "dagster_dask"),
    "engine": ("dagster", "submitit", "dagster_dask"),
    "dagster": ("submitit",),
}


def imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def forbidden_for(layer: str) -> tuple[str, ...]:
    above = ORDER[ORDER.index(layer) + 1 :]
    return (
        *(f"further_dagster.{upper}" for upper in above),
        "further_dagster.testing",
        "further_dagster.cli",
        *THIRD_PARTY[layer],
    )


@pytest.mark.parametrize("layer", ORDER)
def test_layers_import_only_downward(layer):
    bad = []
    for path in sorted((PACKAGE / layer).rglob("*.py")):
        for name in imports(path):
            if any(_within(name, f) for f in forbidden_for(layer)):
                bad.append(f"{path.relative_to(PACKAGE)} imports {name}")
    assert bad == []


@pytest.mark.parametrize("leaf", LEAVES)
def test_errors_and_settings_import_no_layer(leaf):
    path = PACKAGE / (leaf.rpartition(".")[2] + ".py")
    ours = [n for n in imports(path) if _within(n, "further_dagster")]
    assert set(ours) <= set(LEAVES)


def test_only_compat_imports_dagster_private_modules():
    private = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for name in imports(path):
            if name.startswith("dagster._"):
                private.append(str(path.relative_to(PACKAGE)))
    assert sorted(set(private)) == ["dagster/_compat.py"]


def test_only_the_submitit_module_imports_submitit():
    users = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if any(_within(name, "submitit") for name in imports(path)):
            users.append(str(path.relative_to(PACKAGE)))
    assert users == ["slurm/_submitit.py"]


def test_nothing_in_core_changes_interpreter_settings():
    offenders = []
    for path in sorted((PACKAGE / "core").rglob("*.py")):
        text = path.read_text()
        for call in ("setrecursionlimit", "setswitchinterval", "sys._getframe", "os.environ["):
            if call in text:
                offenders.append(f"{path.relative_to(PACKAGE)}: {call}")
    assert offenders == []


def test_importing_the_package_and_a_session_loads_no_dagster():
    code = (
        "import sys\n"
        "import further_dagster\n"
        "from further_dagster import Session, Cell, Project, VAR, SlurmSpec\n"
        "import further_dagster.core, further_dagster.store, further_dagster.engine\n"
        "import further_dagster.slurm\n"
        "print(sorted(m for m in sys.modules if m == 'dagster' or m.startswith('dagster.')"
        " or m == 'submitit' or m == 'distributed'))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
