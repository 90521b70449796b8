"""Federated graph tickets end to end: configs/fl/cora_graph.yaml through the real ServerApp and
ClientApp, in process (``fedticket fl run`` on Flower's simulation engine runs the same
ServerApp and ClientApp; tests/e2e/test_cli_fl_run.py checks that the two engines agree)."""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow
CONFIG = REPO / "configs/fl/cora_graph.yaml"
TINY = ["rounds=2", "num_clients=5", "clients_per_round=3", "graph.hidden=32",
        "model.prune_iterations=5", "train.local_epochs=3", "eval.personal_every=1"]


def _data_root() -> Path:
    for cand in (os.environ.get("FEDTICKET_DATA"), REPO.parent / "shared" / "data"):
        if cand and (Path(cand) / "Planetoid" / "Cora" / "raw").is_dir():
            return Path(cand).resolve()
    pytest.skip("Planetoid Cora not found: set FEDTICKET_DATA to a folder holding Planetoid/Cora/raw/")


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize("method,sets", [
    ("hidenseek", []), ("fedavg", []),
    ("fedavg-subnet", ["graph.model=gin", "graph.partition=louvain"])])
def test_cora_graph_runs_in_process_with_the_usual_results(tmp_path, method, sets):
    from fedticket.fl.run import prepare
    from fedticket.fl.server_app import run_in_process
    from fedticket.fl.task import get_task

    cfg = prepare(CONFIG, TINY + [f"method={method}", *sets], data_root=str(_data_root()))
    out = tmp_path / method
    summary = run_in_process(cfg, out)
    for f in ("rounds.csv", "summary.json", "config.yaml", "accuracy_vs_round.png",
              "accuracy_vs_uplink.png", "checkpoint.safetensors"):
        assert (out / f).is_file(), f
    rows = _rows(out / "rounds.csv")
    assert [int(r["round"]) for r in rows] == [0, 1, 2]   # round 0: the initial global model
    assert all(0.0 <= float(r["global_accuracy"]) <= 1.0 for r in rows)
    assert json.loads((out / "summary.json").read_text())["dataset"] == \
        f"cora-{cfg.graph.partition}"
    # the global test set is every client's test nodes, each in its own subgraph
    task = get_task(cfg)
    _, y_test = task.test_data(cfg, cfg.data.root)
    local = [task.client_data(cfg, cfg.data.root, p) for p in range(cfg.num_clients)]
    assert len(y_test) + sum(len(c[1]) + len(c[3]) for c in local) == 2708  # Cora's nodes
    if method == "hidenseek":   # 1 bit per SynFlow-kept weight, the same wire as vision
        from fedticket.fl.model import build_ticket

        kept = build_ticket(cfg).kept
        assert summary["uplink_bytes_per_client_round"] == math.ceil(kept / 8) + 8
