"""End to end through Flower's simulation engine (Ray backend): 4 clients, 2 rounds, small
FashionMNIST subset. Locates data via $FEDTICKET_DATA, else ../shared/data beside the repo."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from flwr.app import Array
from flwr.clientapp import ClientApp

from fedticket.fl import client_app as real
from fedticket.fl import wire
from fedticket.fl.protocol import METRICS, UPDATE, partition_of

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _data_root() -> Path:
    for cand in (os.environ.get("FEDTICKET_DATA"), REPO.parent / "shared" / "data"):
        if cand and (Path(cand) / "FashionMNIST" / "raw" / "train-images-idx3-ubyte").is_file():
            return Path(cand).resolve()
    pytest.skip("FashionMNIST not found: set FEDTICKET_DATA to a folder holding FashionMNIST/raw/")


def _cfg(tmp_path, *extra):
    from fedticket.fl.run import prepare

    return prepare(REPO / "configs/fl/quickstart.yaml",
                   ["num_clients=4", "clients_per_round=3", "rounds=2",
                    "data.train_subset=2000", "data.test_subset=1000",
                    "model.prune_iterations=10", "eval.personal_every=1",
                    "data.download=false", "sim.num_cpus=2", *extra],
                   data_root=str(_data_root()))


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_hidenseek_through_flower_engine_is_deterministic(tmp_path):
    from fedticket.fl.run import run_fl

    # the paper's method and its packed 1-bit payloads (the quickstart's default is signscore)
    cfg = _cfg(tmp_path, "method=hidenseek")
    s1 = run_fl(cfg, tmp_path / "a", quiet=True)
    s2 = run_fl(_cfg(tmp_path, "method=hidenseek"), tmp_path / "b", quiet=True)

    out = tmp_path / "a"
    for name in ("config.yaml", "rounds.csv", "summary.json", "accuracy_vs_round.png",
                 "accuracy_vs_uplink.png"):
        assert (out / name).is_file(), name
    rows = _rows(out / "rounds.csv")
    assert [r["round"] for r in rows] == ["0", "1", "2"]
    for col in ("round", "global_accuracy", "personalized_accuracy", "uplink_bytes",
                "downlink_bytes", "client_train_seconds"):
        assert col in rows[0]
    summary = json.loads((out / "summary.json").read_text())
    for key in ("method", "dataset", "density", "num_clients", "rounds", "kept_weights",
                "final_global_accuracy", "uplink_bytes_per_client_round",
                "downlink_bytes_per_client_round", "total_uplink_bytes", "wall_seconds"):
        assert key in summary, key
    kept = summary["kept_weights"]
    assert kept == round(0.1 * summary["prunable_weights"])
    # bytes counted from the payloads that crossed Flower's engine
    assert summary["uplink_bytes_per_client_round"] == math.ceil(kept / 8) + 8
    assert summary["downlink_bytes_per_client_round"] == math.ceil(kept / 8) + 8
    assert int(rows[1]["uplink_bytes"]) == 3 * (math.ceil(kept / 8) + 8)
    assert summary["total_uplink_bytes"] == 2 * 3 * (math.ceil(kept / 8) + 8)
    assert summary["rejected_replies"] == 0
    # it learns: two short rounds beat the random-sign start by a wide margin
    assert summary["final_global_accuracy"] > summary["initial_global_accuracy"] + 0.2
    assert rows[2]["personalized_accuracy"] != ""
    # same seed, same numbers (node ids and Ray scheduling differ between the runs)
    assert [r["global_accuracy"] for r in rows] == \
        [r["global_accuracy"] for r in _rows(tmp_path / "b" / "rounds.csv")]
    assert s1["final_global_accuracy"] == s2["final_global_accuracy"]


# A ClientApp that wraps fedticket's and corrupts the replies of some partitions:
# partition 0 sends one bit short, partition 1 an Array of dtype float32, partition 2 no metrics.
faulty_app = ClientApp()



@faulty_app.query()
def _query(msg, context):
    return real.query(msg, context)


@faulty_app.train()
def _train(msg, context):
    reply = real.train(msg, context)
    pid = partition_of(msg, context)
    rec = reply.content.array_records[UPDATE]
    payload = rec["payload"]
    if pid == 0:
        n = int.from_bytes(bytes(payload.data)[4:8], "little")
        rec["payload"] = wire.bits_array(torch.ones(n - 1, dtype=torch.bool))
    elif pid == 1:
        rec["payload"] = Array(dtype="float32", shape=(len(payload.data),), stype=payload.stype,
                               data=payload.data)
    elif pid == 2:
        del reply.content.metric_records[METRICS]
    return reply


@faulty_app.evaluate()
def _evaluate(msg, context):
    return real.evaluate_personal(msg, context)


def test_faulty_clients_are_left_out_through_the_engine(tmp_path, caplog):
    import logging

    import ray.cloudpickle as cloudpickle

    from fedticket.fl.run import run_fl

    # the faulty ClientApp lives in this test module: ship it to the Ray workers by value
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    # hidenseek: the corruptions above are of its packed-bit payload
    cfg = _cfg(tmp_path, "method=hidenseek", "rounds=1", "clients_per_round=4")
    with caplog.at_level(logging.WARNING, logger="fedticket.fl"):
        summary = run_fl(cfg, tmp_path / "f", quiet=True, client_app=faulty_app)
    rows = _rows(tmp_path / "f" / "rounds.csv")
    assert rows[1]["accepted"] == "1" and rows[1]["rejected"] == "3"
    assert summary["rejected_replies"] == 3
    assert "carries" in caplog.text           # wrong bit length
    assert "dtype" in caplog.text             # wrong dtype
    assert "missing MetricRecord" in caplog.text
    assert summary["final_global_accuracy"] > summary["initial_global_accuracy"]


def test_cli_bad_config_fails_before_running(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "fedticket", "fl", "run", "-c",
                           str(REPO / "configs/fl/quickstart.yaml"), "--set", "density=0",
                           "--out", str(tmp_path / "x")],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 2
    assert "density must be in (0, 1]" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "x").exists()
