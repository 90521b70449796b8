"""Checkpoint/resume and node faults through Flower's simulation engine (Ray).

The quickstart's method is signscore, whose server keeps a score and a velocity across rounds:
the resumed run equals the uninterrupted one only because the checkpoint carries them
(``Method.state``; tests/fl/test_faults_checkpoint.py checks the same in memory, for every
method that keeps server state).

The same ServerApp code runs under the deployment engine (tests/e2e/test_deploy_e2e.py runs it
with real SuperLink/SuperNode processes); here the engine is Ray, which is faster and lets one
test compare an interrupted-and-resumed run with an uninterrupted one round for round.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import sys
from pathlib import Path

import pytest
from flwr.clientapp import ClientApp

from fedticket.errors import UserError
from fedticket.fl import checkpoint
from fedticket.fl import client_app as real
from fedticket.fl.protocol import partition_of

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def _cfg(tmp_path, *extra):
    from fedticket.fl.run import prepare

    root = None
    for cand in (os.environ.get("FEDTICKET_DATA"), REPO.parent / "shared" / "data"):
        if cand and (Path(cand) / "FashionMNIST" / "raw" / "train-images-idx3-ubyte").is_file():
            root = Path(cand).resolve()
    if root is None:
        pytest.skip("FashionMNIST not found: set FEDTICKET_DATA to a folder holding FashionMNIST/raw/")
    return prepare(REPO / "configs/fl/quickstart.yaml",
                   ["num_clients=4", "clients_per_round=3", "data.train_subset=2000",
                    "data.test_subset=1000", "model.prune_iterations=10",
                    "eval.personal_every=1", "data.download=false", "sim.num_cpus=2", *extra],
                   data_root=str(root))


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


class Stop(RuntimeError):
    pass


def test_resumed_run_equals_uninterrupted_run(tmp_path):
    from fedticket.fl.run import run_fl

    base = ("rounds=4", "server.client_state_dir={}")
    cfg_a = _cfg(tmp_path, base[0], base[1].format(tmp_path / "state-a"))
    full = run_fl(cfg_a, tmp_path / "a", quiet=True)

    def stop_after_2(server_round, _arrays):
        if server_round == 2:
            raise Stop("server killed after round 2")

    cfg_b = _cfg(tmp_path, base[0], base[1].format(tmp_path / "state-b"))
    with pytest.raises(Stop):
        run_fl(cfg_b, tmp_path / "b", quiet=True, on_round_end=stop_after_2)
    ck = checkpoint.load(tmp_path / "b" / checkpoint.FILENAME)
    assert ck.round == 2 and [r["round"] for r in ck.rows] == [0, 1, 2]
    # the quickstart's signscore: its server score and velocity travel with the checkpoint
    assert cfg_b.method == "signscore" and set(ck.method_state) == {"score", "velocity"}

    # a rerun without resume must not overwrite the checkpointed run
    with pytest.raises(UserError, match="server.resume=true"):
        run_fl(cfg_b, tmp_path / "b", quiet=True)
    # a changed result-relevant key is refused, naming the key
    cfg_bad = _cfg(tmp_path, *base[:1], base[1].format(tmp_path / "state-b"),
                   "server.resume=true", "train.lr=0.05")
    with pytest.raises(UserError, match="train.lr"):
        run_fl(cfg_bad, tmp_path / "b", quiet=True)

    cfg_r = _cfg(tmp_path, base[0], base[1].format(tmp_path / "state-b"), "server.resume=true")
    resumed = run_fl(cfg_r, tmp_path / "b", quiet=True)
    a, b = _rows(tmp_path / "a" / "rounds.csv"), _rows(tmp_path / "b" / "rounds.csv")
    assert [r["round"] for r in b] == ["0", "1", "2", "3", "4"]  # none lost, none repeated
    for ra, rb in zip(a, b, strict=True):
        for col in ("global_accuracy", "global_loss", "personalized_accuracy", "uplink_bytes",
                    "accepted"):
            assert ra[col] == rb[col], (ra["round"], col)
    assert resumed["final_global_accuracy"] == full["final_global_accuracy"]
    assert resumed["resumed_at_round"] == 3
    assert checkpoint.load(tmp_path / "b" / checkpoint.FILENAME).round == 4
    # client state on disk: only what a later resume could still need is kept
    kept = sorted(p.name for p in (tmp_path / "state-b").rglob("round-*.safetensors"))
    assert kept and all(name.startswith("round-") for name in kept)


crashy_app = ClientApp()


@crashy_app.query()
def _query(msg, context):
    return real.query(msg, context)


@crashy_app.train()
def _train(msg, context):
    pid = partition_of(msg, context)
    rnd = int(msg.content.config_records["config"]["round"])
    if pid == 1 and rnd == 2:
        raise RuntimeError("device lost power")
    return real.train(msg, context)


@crashy_app.evaluate()
def _evaluate(msg, context):
    return real.evaluate_personal(msg, context)


def test_failed_node_is_logged_and_takes_part_again(tmp_path, caplog):
    import ray.cloudpickle as cloudpickle

    from fedticket.fl.run import run_fl

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    cfg = _cfg(tmp_path, "rounds=3", "clients_per_round=4", "eval.personal_every=0")
    with caplog.at_level(logging.WARNING, logger="fedticket.fl"):
        summary = run_fl(cfg, tmp_path / "f", quiet=True, client_app=crashy_app)
    rows = _rows(tmp_path / "f" / "rounds.csv")
    assert [r["accepted"] for r in rows[1:]] == ["4", "3", "4"]
    assert rows[2]["missing"] == "1"
    assert summary["missing_replies"] == 1
    assert "round 2: client 1 (node" in caplog.text and "device lost power" in caplog.text
    assert "client 1 (node" in caplog.text and "takes part" in caplog.text
    meta = json.loads((tmp_path / "f" / "summary.json").read_text())
    assert meta["rounds"] == 3
