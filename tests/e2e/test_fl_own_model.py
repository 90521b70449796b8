"""examples/own-model as a user runs it: ``flwr run examples/own-model --federation-config
"num-supernodes=4"`` on Flower's local SuperLink (simulation runtime), with a model fedticket does
not ship. The SuperLink gets a private FLWR_HOME and its own ports, and is stopped by its PID."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "own-model"
pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _superlink_tree(flwr_home: Path) -> list[int]:
    """PIDs of the flower-superlink whose log file lies under ``flwr_home``, and its children."""
    out = subprocess.run(["ps", "-ww", "-eo", "pid=,ppid=,args="], capture_output=True,
                         text=True).stdout   # -ww: full command lines (the path is at the end)
    procs = [line.split(None, 2) for line in out.splitlines() if line.strip()]
    tree = [int(p[0]) for p in procs
            if len(p) == 3 and "flower-superlink" in p[2] and str(flwr_home) in p[2]]
    for pid, ppid, *_ in procs:   # ps lists parents before children
        if int(ppid) in tree and int(pid) not in tree:
            tree.append(int(pid))
    return tree


def _stop(pids: list[int], grace: float = 20.0) -> None:
    """SIGTERM, then SIGKILL what is still alive after ``grace`` seconds."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    alive = list(pids)
    while alive and time.monotonic() < deadline:
        time.sleep(0.5)
        alive = [p for p in alive if Path(f"/proc/{p}").exists()
                 and "zombie" not in Path(f"/proc/{p}/status").read_text().lower()]
    for pid in alive:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def test_own_model_example_runs_with_flwr_run(tmp_path):
    if not (Path(sys.executable).parent / "flwr").exists():
        pytest.skip("the flwr command is not installed beside this Python")
    flwr_home = tmp_path / "flwr-home"
    out = tmp_path / "history.json"
    env = dict(os.environ, FLWR_HOME=str(flwr_home),
               FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="1",
               FLWR_LOCAL_SUPERLINK_HTTP_API_PORT=str(_free_port()),
               FLWR_LOCAL_CONTROL_API_PORT=str(_free_port()),
               PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH"))
                                          if p))
    cmd = [str(Path(sys.executable).parent / "flwr"), "run", str(EXAMPLE),
           "--federation-config", "num-supernodes=4", "--stream",
           "--run-config", f'num-server-rounds=2 train-examples=800 test-examples=300 '
                           f'output="{out}"']
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
        deadline = time.monotonic() + 60
        while not out.exists() and time.monotonic() < deadline:
            time.sleep(1)   # the ServerApp writes the file just before the run ends
    finally:
        _stop(_superlink_tree(flwr_home))
    assert out.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    rounds = {int(r): v for r, v in result["rounds"].items()}
    assert sorted(rounds) == [0, 1, 2]
    # every node sent 1 bit per kept weight of the example's own CNN (+ the 8-byte header)
    per_reply = (result["kept_weights"] + 7) // 8 + 8
    assert rounds[1]["uplink_bytes"] == rounds[2]["uplink_bytes"] == 4 * per_reply
    assert all(0.0 <= v["accuracy"] <= 1.0 for v in rounds.values())
    assert rounds[2]["personalized_accuracy"] is not None
