"""Flower's Deployment Engine with real processes on 127.0.0.1: TLS, SuperNode auth, faults, resume.

One SuperLink (TLS, ``--enable-supernode-auth``, a database), three registered SuperNodes each
holding one FashionMNIST partition, and ``flwr run .`` of the same ServerApp/ClientApp that the
simulation runs. Checked, in order:

1. an unregistered SuperNode is refused (it exits; it never appears online);
2. faults: a SuperNode SIGKILLed during round 2 does not stall the run: round 2 ends at
   ``server.train_timeout`` with the two replies that came, the missing node is logged by its
   id; once Flower has marked it offline it is restarted, answers the server's probe and takes
   part again by round 4, and the run completes;
3. resume: the SuperLink with its ServerApp is SIGKILLed once round 2 is checkpointed and
   started again on the same database; the SuperNodes (which Flower shuts down then) are
   restarted once their old heartbeat has expired, and a new ``flwr run`` with
   ``server.resume=true`` on the same results folder finishes round 3 with the checkpointed
   rows unchanged.

Ports are free ones picked at run time; every process (and Flower's superexec / serverapp /
clientapp children) is stopped by PID in ``LocalFederation.stop_all`` (a ``finally``).
Bounded: each wait has a timeout; about 5-6 minutes on a 2-core machine.
"""

from __future__ import annotations

import csv
import json
import os
import time
from pathlib import Path

import pytest

from fedticket.deploy.localfed import LocalFederation
from fedticket.fl import checkpoint

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.deploy]

COMMON = {
    "num_clients": 3, "clients_per_round": 3, "rounds": 3,
    "data.train_subset": 1500, "data.test_subset": 500, "model.prune_iterations": 10,
    "eval.personal_every": 0, "train.max_steps": 20,
    "server.train_timeout": 45.0, "server.evaluate_timeout": 45.0,
    "server.query_timeout": 25.0, "server.connect_timeout": 90.0,
    # the default method (signscore: its server score must survive the kill below) with its sign
    # vote in packed bits (the quickstart's delta vote is range-coded), so the uplink is exactly
    # one bit per kept weight + the header
    "signscore.uplink_vote": "sign",
    "signscore.uplink_coding": "packed", "signscore.downlink_coding": "packed",
}


def _data_root() -> Path:
    for cand in (os.environ.get("FEDTICKET_DATA"), REPO.parent / "shared" / "data"):
        if cand and (Path(cand) / "FashionMNIST" / "raw" / "train-images-idx3-ubyte").is_file():
            return Path(cand).resolve()
    pytest.skip("FashionMNIST not found: set FEDTICKET_DATA to a folder holding FashionMNIST/raw/")


def _rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _wait(cond, timeout: float, what: str, poll: float = 0.1):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        value = cond()
        if value:
            return value
        time.sleep(poll)
    raise TimeoutError(f"waited {timeout:g} s for {what}")


def _ckpt_round(path: Path) -> int:
    try:
        return checkpoint.load(path).round
    except Exception:  # not written yet
        return 0


def test_deployment_tls_auth_faults_and_resume(tmp_path):
    data = _data_root()
    with LocalFederation(tmp_path / "fed", REPO, data_root=data) as fed:
        fed.start_superlink()
        for i in range(3):
            fed.register(f"dev{i}")
        nodes = [fed.start_supernode(f"dev{i}", i, 3, state_dir=tmp_path / f"state{i}")
                 for i in range(3)]
        intruder = fed.start_supernode("intruder", 0, 3)  # key made, never registered
        fed.wait_online(["dev0", "dev1", "dev2"])

        # 1. an unregistered SuperNode is refused
        intruder.popen.wait(timeout=120)
        # the process exits with status 1; Flower's own refusal code is only in its log
        assert intruder.popen.returncode == 1
        assert "Failed to activate SuperNode" in intruder.text()
        assert "Exit Code: 305" in intruder.text()

        # 2. a SuperNode dies during round 2 and comes back
        out_a = tmp_path / "a"
        run_a = fed.run({**COMMON, "rounds": 4, "output_dir": str(out_a)})
        _wait(lambda: len(_rows(out_a / "rounds.csv")) >= 2, 300, "round 1 to finish")
        victim = nodes[1]
        fed.kill(victim)                      # SIGKILL: no goodbye
        # Flower keeps a SIGKILLed node "online" until its heartbeat expires and refuses a new
        # process with the same key until then; a real device reboots slower than that
        fed.wait_offline("dev1")
        nodes[1] = fed.restart(victim)        # same key and partition, fresh process
        assert fed.wait_run(run_a, 400) == "finished:completed", fed.logs(run_a)[-3000:]
        rows = _rows(out_a / "rounds.csv")
        assert [r["round"] for r in rows] == ["0", "1", "2", "3", "4"]
        assert rows[1]["accepted"] == "3", rows
        assert rows[2]["accepted"] == "2" and rows[2]["missing"] == "1", rows
        assert rows[4]["accepted"] == "3", rows   # the restarted node takes part again
        log = (out_a / "server.log").read_text()
        assert f"round 2: client 1 (node {fed.node_ids['dev1']})" in log, log
        assert f"client 1 (node {fed.node_ids['dev1']}) answers again" in log, log
        summary = json.loads((out_a / "summary.json").read_text())
        assert summary["rounds"] == 4 and summary["missing_replies"] >= 1
        assert summary["final_global_accuracy"] > summary["initial_global_accuracy"]
        assert summary["uplink_bytes_per_client_round"] == (summary["kept_weights"] + 7) // 8 + 8

        # 3. the server dies after round 2 is checkpointed; a new run resumes at round 3
        out_b = tmp_path / "b"
        run_b = fed.run({**COMMON, "output_dir": str(out_b)})
        ck_path = out_b / checkpoint.FILENAME
        _wait(lambda: _ckpt_round(ck_path) >= 2, 400, "round 2 to be checkpointed", poll=0.05)
        fed.kill(fed.superlink)               # the server host dies: SuperLink, ServerApp, all
        ck = checkpoint.load(ck_path)
        assert ck.round == 2, "the server outran the kill: round 3 finished within the poll"
        assert set(ck.method_state) == {"score", "velocity"}   # signscore's server state
        assert not (out_b / "summary.json").exists()
        fed.start_superlink()                 # same port, same database: registrations kept
        # Flower 1.42: the SuperNodes shut down when the new SuperLink does not know their
        # session, and may come back once their old heartbeat has expired (systemd would
        # restart them; docs/deploy.md)
        for node in nodes:
            node.popen.wait(timeout=120)
        for i, node in enumerate(nodes):
            fed.wait_offline(node.name)
            nodes[i] = fed.restart(node)
        fed.wait_online(["dev0", "dev1", "dev2"], timeout=120)
        run_c = fed.run({**COMMON, "output_dir": str(out_b), "server.resume": True})
        assert run_c != run_b
        assert fed.wait_run(run_c, 400) == "finished:completed", fed.logs(run_c)[-3000:]
        rows_b = _rows(out_b / "rounds.csv")
        assert [r["round"] for r in rows_b] == ["0", "1", "2", "3"]
        for before, after in zip(ck.rows, rows_b[:3]):
            assert str(before["global_accuracy"]) == after["global_accuracy"]
            assert str(before["uplink_bytes"]) == after["uplink_bytes"]
        assert rows_b[3]["accepted"] == "3"
        summary_b = json.loads((out_b / "summary.json").read_text())
        assert summary_b["resumed_at_round"] == 3 and summary_b["rounds"] == 3
        assert checkpoint.load(ck_path).round == 3
        assert "resuming from" in (out_b / "server.log").read_text()
