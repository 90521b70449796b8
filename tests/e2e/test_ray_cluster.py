"""The simulation on an existing two-node Ray cluster (both nodes on 127.0.0.1).

A head (``ray start --head``, 1 CPU, custom resource ``head``) and a second node (``ray start
--address``, 1 CPU, custom resource ``worker2``) are started with ``--block`` in their own
sessions, so every process they spawn is found from their PIDs and stopped by PID at the end
(no ``ray stop``: it would stop every Ray instance on the machine). The run attaches through
``sim.ray_address``; each client writes down the Ray node it ran on, and both nodes must appear.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from flwr.clientapp import ClientApp

from fedticket.deploy.procs import free_port, kill_procs, session, tree
from fedticket.fl import client_app as real

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow

# set before the run: the app travels to Ray's workers by value, with this module's globals
# (a worker of an existing cluster has its node's environment, not the driver's)
PLACEMENT = {"dir": ""}
placed_app = ClientApp()


def _record(msg, context):
    import ray

    folder = PLACEMENT["dir"]
    if folder:
        node = ray.get_runtime_context().get_node_id()
        rnd = int(msg.content.config_records["config"]["round"])
        Path(folder, f"r{rnd}-n{context.node_id}.json").write_text(json.dumps(
            {"ray_node": node, "pid": os.getpid(), "type": msg.metadata.message_type}))


@placed_app.query()
def _query(msg, context):
    return real.query(msg, context)


@placed_app.train()
def _train(msg, context):
    _record(msg, context)
    return real.train(msg, context)


@placed_app.evaluate()
def _evaluate(msg, context):
    _record(msg, context)
    return real.evaluate_personal(msg, context)


def _data_root() -> Path:
    for cand in (os.environ.get("FEDTICKET_DATA"), REPO.parent / "shared" / "data"):
        if cand and (Path(cand) / "FashionMNIST" / "raw" / "train-images-idx3-ubyte").is_file():
            return Path(cand).resolve()
    pytest.skip("FashionMNIST not found: set FEDTICKET_DATA to a folder holding FashionMNIST/raw/")


def _ray_start(args: list[str], log: Path) -> subprocess.Popen:
    # --block: `ray start` stays the parent of the node's processes, so they are ours by PID
    with open(log, "wb") as fh:
        return subprocess.Popen(["ray", "start", "--block", "--disable-usage-stats",
                                 "--node-ip-address", "127.0.0.1", "--num-gpus", "0",
                                 "--dashboard-agent-listen-port", str(free_port()),
                                 "--metrics-export-port", str(free_port()), *args],
                                stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)


def _stop(procs: list[subprocess.Popen]) -> None:
    found, seen = [], set()
    for p in procs:
        for q in [*tree(p.pid), *session(p.pid)]:
            if q.pid not in seen:
                seen.add(q.pid)
                found.append(q)
    for q in list(found):   # what the node's processes spawned in sessions of their own
        for c in tree(q.pid):
            if c.pid not in seen:
                seen.add(c.pid)
                found.append(c)
    kill_procs(found, wait=10)


def test_simulation_runs_on_both_nodes_of_a_ray_cluster(tmp_path):
    import ray
    import ray.cloudpickle as cloudpickle

    from fedticket.fl.run import prepare, run_fl

    temp = Path(f"/tmp/rc{os.getpid()}")     # short: Ray's socket paths must fit 107 bytes
    port = free_port()
    address = f"127.0.0.1:{port}"
    procs = []
    try:
        procs.append(_ray_start(["--head", "--port", str(port), "--num-cpus", "1",
                                 "--resources", '{"head": 1}', "--include-dashboard", "false",
                                 "--ray-client-server-port", str(free_port()),
                                 "--temp-dir", str(temp)], tmp_path / "head.log"))
        deadline = time.monotonic() + 60
        while not (temp / "session_latest").exists():
            assert procs[0].poll() is None, (tmp_path / "head.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "the Ray head did not start"
            time.sleep(0.5)
        procs.append(_ray_start(["--address", address, "--num-cpus", "1",
                                 "--resources", '{"worker2": 1}'], tmp_path / "worker.log"))
        os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")  # a CPU run: noise
        ray.init(address=address, logging_level="ERROR", log_to_driver=False)
        try:
            while len([n for n in ray.nodes() if n["Alive"]]) < 2:
                assert procs[1].poll() is None, (tmp_path / "worker.log").read_text()[-2000:]
                assert time.monotonic() < deadline, "the second Ray node did not join"
                time.sleep(0.5)
            nodes = {("head" if "head" in n["Resources"] else "worker2"): n["NodeID"]
                     for n in ray.nodes() if n["Alive"]}
        finally:
            ray.shutdown()
        assert set(nodes) == {"head", "worker2"}

        placement = tmp_path / "placement"
        placement.mkdir()
        PLACEMENT["dir"] = str(placement)
        cloudpickle.register_pickle_by_value(sys.modules[__name__])
        cfg = prepare(REPO / "configs/fl/quickstart.yaml",
                      ["num_clients=6", "clients_per_round=4", "rounds=2",
                       "data.train_subset=1200", "data.test_subset=500",
                       "model.prune_iterations=5", "train.max_steps=5", "eval.personal_every=0",
                       "data.download=false", f"sim.ray_address={address}"],
                      data_root=str(_data_root()))
        summary = run_fl(cfg, tmp_path / "run", quiet=True, client_app=placed_app)
        ray.shutdown()   # run_fl's driver connection, if Flower left it open
        assert summary["rounds"] == 2 and summary["rejected_replies"] == 0
        records = [json.loads(p.read_text()) for p in placement.glob("*.json")]
        assert len(records) == 2 * 4
        assert {r["ray_node"] for r in records} == set(nodes.values())
    finally:
        _stop(procs)
        import shutil

        shutil.rmtree(temp, ignore_errors=True)
    for p in procs:
        assert p.poll() is not None
    left = []
    for q in psutil.process_iter(["cmdline"]):
        try:
            if any(str(temp) in a or address in a for a in q.info["cmdline"] or ()):
                left.append(q.pid)
        except psutil.Error:
            continue
    assert not left, f"processes of the test cluster still running: {left}"
