"""graph.defer_dynamo: PyG imports without loading torch._dynamo; the first real use loads it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import sys, torch
from graph import defer_dynamo
import torch_geometric.data, graph.run
loaded = lambda: 'torch._dynamo.eval_frame' in sys.modules
print(defer_dynamo.is_deferred(), loaded())
print(torch._dynamo.OptimizedModule.__name__, defer_dynamo.is_deferred(), loaded())
"""


def _run(env_extra: dict) -> list[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), **env_extra}
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", SCRIPT], env=env, cwd=ROOT,
                         capture_output=True, text=True, check=True, timeout=120)
    return out.stdout.split("\n")


def test_pyg_loads_without_dynamo_and_the_first_use_loads_it():
    first, second = _run({})[:2]
    assert first == "True False"
    assert second == "OptimizedModule False True"


def test_switched_off_loads_dynamo_with_pyg():
    assert _run({"FEDTICKET_DEFER_DYNAMO": "0"})[0] == "False True"
