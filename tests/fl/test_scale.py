"""Thousands of virtual clients: nothing the server or a worker does grows with the unsampled ones.

The membership's message count is measured on a fake Grid of 100 and 10,000 nodes; the
assigned numbering must train the same run as the queried one (partition p trains on partition
p's data either way), and a worker cuts only the partitions it plays.
"""

from __future__ import annotations

import json
import random

import pytest
from flwr.app import Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.supercore.task_identity import TaskIdentity

from fedticket.fl import protocol
from fedticket.fl.config import load_fl_config
from fedticket.fl.membership import Membership


class CountingGrid(Grid):
    """``n`` nodes with random ids (as Flower's simulation makes them); counts every message
    and answers a query as a node whose node config says ``partition-id`` = its creation
    index."""

    def __init__(self, n: int, seed: int = 0):
        ids = random.Random(seed).sample(range(1, 2**62), n)
        self.config_pid = {node: i for i, node in enumerate(ids)}
        self.n = n
        self.sent: list[Message] = []
        self.silent: set[int] = set()
        # a ServerApp process has a task identity (the runtime sets it); Messages need one
        TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, 1

    def get_node_ids(self):
        return list(self.config_pid)

    def send_and_receive(self, messages, *, timeout=None):
        replies = []
        for i, msg in enumerate(messages):
            msg.metadata.__dict__["_message_id"] = f"m{len(self.sent)}-{i}"
            self.sent.append(msg)
            node = msg.metadata.dst_node_id
            if node in self.silent:
                continue
            m = MetricRecord({protocol.PARTITION: self.config_pid[node],
                              protocol.NUM_PARTITIONS: self.n})
            reply = Message(RecordDict({protocol.METRICS: m}), reply_to=msg)
            reply.metadata.__dict__["_src_node_id"] = node
            replies.append(reply)
        return replies

    # unused by Membership
    def set_run(self, run_id):  # pragma: no cover
        pass

    @property
    def run(self):  # pragma: no cover
        return None

    def create_message(self, *a, **k):  # pragma: no cover
        raise NotImplementedError

    def push_messages(self, messages):  # pragma: no cover
        raise NotImplementedError

    def pull_messages(self, message_ids):  # pragma: no cover
        raise NotImplementedError


def _cfg(n: int, mode: str):
    return load_fl_config(None, [f"num_clients={n}", "clients_per_round=10",
                                 f"server.partitions={mode}", "server.connect_timeout=1"])


def _setup_and_rounds(n: int, rounds: int = 5) -> tuple[int, Membership]:
    grid = CountingGrid(n)
    members = Membership(_cfg(n, "assign"))
    members.connect(grid)
    for r in range(1, rounds + 1):
        members.before_round(grid, r, r - 1)
    return len(grid.sent), members


def test_assigned_membership_sends_nothing_whatever_the_number_of_nodes():
    small, _ = _setup_and_rounds(100)
    large, members = _setup_and_rounds(10_000)
    assert small == large == 0
    # every node numbered: partition p is the p-th node id in order
    assert members.available() == list(range(10_000))
    assert [members.nodes[p] for p in range(10_000)] == sorted(members.nodes.values())


def test_queried_membership_asks_every_node_once():
    """The deployment path (a node's data is its own) still asks each new node, once."""
    grid = CountingGrid(300)
    members = Membership(_cfg(300, "query"))
    members.connect(grid)
    members.before_round(grid, 1, 0)
    assert len(grid.sent) == 300
    assert all(members.pid(n) == p for n, p in grid.config_pid.items())


def test_a_lost_node_is_the_only_one_probed():
    grid = CountingGrid(10_000)
    members = Membership(_cfg(10_000, "assign"))
    members.connect(grid)
    lost = [members.nodes[3], members.nodes[9_999]]
    for node in lost:
        members.lost(node, 1, "failed: test")
    grid.silent.add(lost[1])
    members.before_round(grid, 2, 1)
    assert sorted(m.metadata.dst_node_id for m in grid.sent) == sorted(lost)
    avail = members.available()
    assert 3 in avail and 9_999 not in avail and len(avail) == 9_999


def test_too_many_nodes_are_refused_with_the_fix():
    grid = CountingGrid(12)
    members = Membership(_cfg(10, "assign"))
    members.connect(grid)
    assert len(members.available()) == 10
    assert len(members.refused) == 2
    assert "num-supernodes=10" in next(iter(members.refused.values()))


def test_auto_assigns_on_flowers_simulation_grid_only():
    from flwr.superlink.grid import InMemoryGrid as SimulationGrid

    from fedticket.fl.membership import assigns_partitions
    from fedticket.fl.memgrid import InMemoryGrid

    cfg = _cfg(10, "auto")
    assert assigns_partitions(cfg, SimulationGrid.__new__(SimulationGrid))
    assert not assigns_partitions(cfg, InMemoryGrid.__new__(InMemoryGrid))


class ShuffledGrid:
    """The in-memory Grid with node ids in random order w.r.t. the node configs' partitions,
    recording which nodes got a message of which type."""

    @staticmethod
    def make(n: int):
        from fedticket.fl import client_app
        from fedticket.fl.memgrid import InMemoryGrid

        class Recording(InMemoryGrid):
            def deliver(self, message):
                self.log.append((message.metadata.message_type, message.metadata.dst_node_id))
                return super().deliver(message)

        ids = random.Random(1).sample(range(10_000, 99_999), n)
        grid = Recording(client_app.app, {node: p for p, node in enumerate(ids)})
        grid.log = []
        return grid


@pytest.mark.parametrize("n", [16])
def test_assigned_run_equals_queried_run_and_messages_only_sampled_nodes(tiny, tmp_path, n):
    from fedticket.fl.server_app import run_server

    accs = {}
    for mode in ("query", "assign"):
        cfg = tiny(f"num_clients={n}", "clients_per_round=3", "eval.personal_every=2",
                   "eval.personal_clients=2", f"server.partitions={mode}")
        grid = ShuffledGrid.make(n)
        run_server(grid, cfg, tmp_path / mode, quiet=True)
        rows = (tmp_path / mode / "rounds.csv").read_text().splitlines()
        accs[mode] = rows
        if mode == "assign":
            assert not [t for t, _ in grid.log if t == "query"]
            touched = {node for _, node in grid.log}
            assert len(touched) <= cfg.rounds * 3 + 2 < n
        else:
            assert len([t for t, _ in grid.log if t == "query"]) == n

    def columns(rows):
        head = rows[0].split(",")
        keep = [head.index(c) for c in ("round", "global_accuracy", "personalized_accuracy",
                                        "uplink_bytes")]
        return [[r.split(",")[i] for i in keep] for r in rows[1:]]

    assert columns(accs["assign"]) == columns(accs["query"])
    summary = json.loads((tmp_path / "assign" / "summary.json").read_text())
    assert summary["rounds"] == 2


def test_a_worker_cuts_only_the_partitions_it_plays(data_root, monkeypatch):
    from flwr_datasets.partitioner import IidPartitioner

    from fedticket.fl import dataset
    from fedticket.fl.run import prepare

    calls = []
    original = IidPartitioner.load_partition

    def counted(self, partition_id):
        calls.append(partition_id)
        return original(self, partition_id)

    monkeypatch.setattr(IidPartitioner, "load_partition", counted)
    dataset._partition.cache_clear()
    cfg = prepare(None, ["num_clients=10000", "data.train_subset=null", "data.download=false"],
                  data_root=str(data_root))
    a = dataset.client_split(cfg, cfg.data.root, 7)
    b = dataset.client_split(cfg, cfg.data.root, 9_999)
    again = dataset.client_split(cfg, cfg.data.root, 7)
    assert calls == [7, 9_999]
    assert (a.train == again.train).all() and len(set(a.train) & set(b.train)) == 0
    assert len(a.train) + len(a.val) == 60_000 // 10_000
    with pytest.raises(ValueError, match="out of range"):
        dataset.client_split(cfg, cfg.data.root, 10_000)


def test_attaching_to_a_ray_cluster_passes_the_address_and_no_cpu_count(monkeypatch):
    from fedticket.deploy.simulation import federation_config
    from fedticket.errors import ConfigError
    from fedticket.fl.run import backend_config

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    local = load_fl_config(None, ["sim.num_cpus=2"])
    assert backend_config(local)["init_args"]["num_cpus"] == 2
    assert "address" not in backend_config(local)["init_args"]
    assert "init-args-num-cpus=2" in federation_config(local)

    attached = load_fl_config(None, ["sim.ray_address=10.0.0.1:6379"])
    assert backend_config(attached)["init_args"]["address"] == "10.0.0.1:6379"
    assert "num_cpus" not in backend_config(attached)["init_args"]
    assert "init-args-num-cpus" not in federation_config(attached)
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.2:6379")   # the environment attaches too
    assert backend_config(load_fl_config(None, []))["init_args"]["address"] == "10.0.0.2:6379"

    with pytest.raises(ConfigError, match="sim.num_cpus=2 cannot be set"):
        backend_config(load_fl_config(None, ["sim.ray_address=auto", "sim.num_cpus=2"]))
    with pytest.raises(ConfigError, match="whole number"):
        federation_config(load_fl_config(None, ["sim.ray_address=auto", "sim.cpus_per_client=0.5"]))


def test_the_clientapp_actors_run_at_the_priority_of_the_runtime_that_feeds_them(monkeypatch):
    """Ray starts its workers at nice 15; the dispatcher that feeds them runs at nice 0, so on a
    busy machine the actors that train would wait for it (docs/fl.md, "Thousands of clients")."""
    import shutil

    from fedticket.deploy.simulation import LocalSimulation

    monkeypatch.delenv("RAY_worker_niceness", raising=False)
    sim = LocalSimulation()
    shutil.rmtree(sim.dir)
    assert sim.env["RAY_worker_niceness"] == "0"
    monkeypatch.setenv("RAY_worker_niceness", "10")   # the caller's choice wins
    sim = LocalSimulation()
    shutil.rmtree(sim.dir)
    assert sim.env["RAY_worker_niceness"] == "10"
