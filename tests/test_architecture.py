"""The direction of imports is part of the design: core knows neither side, the sides not each other."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def imported_modules(folder: Path) -> dict[str, set[str]]:
    out = {}
    for f in folder.rglob("*.py"):
        mods = set()
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Import):
                mods.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                mods.add(node.module)
        out[str(f.relative_to(REPO))] = mods
    return out


@pytest.mark.parametrize("folder,forbidden", [
    ("fedticket/core", ("flwr", "torch_geometric", "fedticket.fl", "fedticket.deploy", "graph",
                        "flwr_datasets")),
    # deploy operates a federation of fl's apps (it may read fl's config); the library never
    # depends on how it is deployed
    ("fedticket/fl", ("graph", "torch_geometric", "fedticket.deploy")),
    ("fedticket/deploy", ("graph", "torch_geometric", "torch")),
    ("graph", ("fedticket.fl", "fedticket.deploy", "flwr", "flwr_datasets")),
])
def test_import_direction(folder, forbidden):
    for path, mods in imported_modules(REPO / folder).items():
        for m in mods:
            for bad in forbidden:
                assert not (m == bad or m.startswith(bad + ".")), f"{path} imports {m}"


def test_core_import_pulls_in_neither_side():
    code = ("import sys, fedticket.core, fedticket.models, fedticket.cli; "
            "bad = [m for m in ('flwr', 'torch_geometric', 'fedticket.fl', 'graph') if m in sys.modules]; "
            "assert not bad, bad")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
