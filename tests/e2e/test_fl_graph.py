"""Federated graph tickets end to end: configs/fl/cora_graph.yaml through the real ServerApp and
ClientApp, in process (``fedticket fl run`` on Flower's simulation engine runs the same
ServerApp and ClientApp; tests/e2e/test_cli_fl_run.py checks that the two engines agree), and
the `flwr run .` path: configs/fl/cora_graph.toml fused into pyproject's run config by Flower's
own functions, handed to the ServerApp's entry point (a real `flwr run` adds Ray and a SuperLink,
~1-2 min here: checked by hand, docs/fl.md)."""

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
    ("hidenseek", []),
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


def _flwr_run_config(toml: Path, overrides: dict) -> dict:
    """The run config ``flwr run . --run-config TOML`` hands the ServerApp: pyproject's
    ``[tool.flwr.app.config]`` with the file's values fused in, by Flower's own functions."""
    import tomllib
    from flwr.common.config import flatten_dict, fuse_dicts, parse_config_args

    defaults = flatten_dict(tomllib.loads((REPO / "pyproject.toml").read_text())
                            ["tool"]["flwr"]["app"]["config"])
    return fuse_dicts(fuse_dicts(defaults, parse_config_args([str(toml)])), overrides)


def test_flwr_run_toml_is_the_yaml_config():
    """configs/fl/cora_graph.toml (what `flwr run .` takes) resolves to cora_graph.yaml."""
    from fedticket.config import flatten, to_dict
    from fedticket.fl.config import config_from_run_config, load_fl_config

    run = _flwr_run_config(REPO / "configs/fl/cora_graph.toml", {"output_dir": "/tmp/x"})
    got = flatten(to_dict(config_from_run_config(run)))
    want = flatten(to_dict(load_fl_config(CONFIG)))
    assert {k: (got[k], want[k]) for k in want if k != "output_dir" and got[k] != want[k]} == {}


def _server_main(run_config: dict, num_partitions: int):
    """The ServerApp's ``flwr run`` entry point on the in-memory Grid (Flower's engine runs the
    same function; only Ray and the SuperLink are left out)."""
    from flwr.app import Context, RecordDict

    from fedticket.fl.client_app import app as client_app
    from fedticket.fl.memgrid import InMemoryGrid
    from fedticket.fl.server_app import main

    grid = InMemoryGrid.for_partitions(client_app, num_partitions)
    main(grid, Context(run_id=1, node_id=0, node_config={}, state=RecordDict(),
                       run_config=run_config))


def test_flwr_run_entry_runs_the_graph_task(tmp_path):
    """dense FedAvg-GCN through the `flwr run` entry (the in-process cases above run the masks)"""
    out = tmp_path / "run"
    tiny = {"method": "fedavg", "rounds": 2, "num_clients": 5, "clients_per_round": 3, "graph.hidden": 32,
            "model.prune_iterations": 5, "train.local_epochs": 3, "eval.personal_every": 1,
            "data.root": str(_data_root()), "output_dir": str(out)}
    _server_main(_flwr_run_config(REPO / "configs/fl/cora_graph.toml", tiny), 5)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dataset"] == "cora-metis" and summary["rounds"] == 2
    assert summary["method"] == "fedavg"
    assert [int(r["round"]) for r in _rows(out / "rounds.csv")] == [0, 1, 2]


def test_flwr_run_entry_honours_data_download_false(tmp_path):
    from fedticket.errors import UserError

    empty = tmp_path / "no-data"
    run = _flwr_run_config(REPO / "configs/fl/cora_graph.toml",
                           {"data.root": str(empty), "data.download": False,
                            "output_dir": str(tmp_path / "run")})
    with pytest.raises(UserError, match="data.download is false") as e:
        _server_main(run, 10)
    assert str(empty) in str(e.value)
    assert not (tmp_path / "run").exists()   # refused before any work
