"""Which Flower node holds which data partition, and which nodes may be sampled now.

Two ways to fill the table (``server.partitions``). *query* (a deployment, where a node's data
is its own): a node is asked once which partition it holds (a ``query`` message) before it is
sampled. *assign* (Flower's simulation, where every node can load any partition): the server
numbers the nodes itself, the lowest free partition ids to the new nodes in node-id order, and
tells a sampled node its partition in the message; no node is asked anything before it is
sampled, so setup and rounds cost the same with 10 or 10,000 nodes. In both ways a node
that missed a reply becomes a *suspect*: it is probed again before its next use, and one that
answers takes part again with a fresh setup (a restarted process has lost the old one). A node
whose answer does not fit the run (wrong ``num-partitions``, partition out of range) is refused,
with the reason kept for the error message.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from flwr.app import ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid

from fedticket.errors import UserError
from fedticket.fl import protocol
from fedticket.fl.replies import Rejected, origin, sent_ids

log = logging.getLogger("fedticket.fl")


class Membership:
    """The node table of one run: partition id <-> node id, suspects, refusals, setups."""

    def __init__(self, cfg, nodes: dict[int, int] | None = None, assign: bool | None = None):
        self.cfg = cfg
        self.assign = assign                           # None: decided by the first grid seen
        self.nodes = dict(nodes or {})                 # partition id -> node id
        self.pid_of = {n: p for p, n in self.nodes.items()}
        self.suspect: set[int] = set()                 # nodes that missed a reply: probe first
        self.refused: dict[int, str] = {}              # nodes not admitted, with the reason
        self.online: set[int] = set(self.pid_of)
        self.has_setup: set[int] = set()               # nodes that acknowledged the setup
        self.connected = False                         # initial discovery done

    def available(self) -> list[int]:
        """Partition ids whose node is online, admitted and not suspected of being down."""
        return sorted(p for p, n in self.nodes.items()
                      if n in self.online and n not in self.suspect)

    def pid(self, node: int) -> int:
        return self.pid_of.get(node, -1)

    # ---- discovery ------------------------------------------------------------------------------
    def _query(self, grid: Grid, node_ids: Sequence[int], timeout: float) -> dict[int, int]:
        """Ask ``node_ids`` which partition they hold; node id -> partition id of valid answers."""
        msgs = [Message(RecordDict({protocol.CONFIG: ConfigRecord({protocol.ROUND: 0})}),
                        dst_node_id=n, message_type=MessageType.QUERY) for n in node_ids]
        answers: dict[int, int] = {}
        replies = list(grid.send_and_receive(msgs, timeout=timeout))
        sent = sent_ids(msgs)
        for reply in replies:
            node = origin(reply, sent)
            try:
                if reply.has_error():
                    raise Rejected(f"error: {reply.error.reason}")
                m = reply.content.metric_records[protocol.METRICS]
                pid, parts = int(m[protocol.PARTITION]), int(m[protocol.NUM_PARTITIONS])
            except (Rejected, KeyError, TypeError, ValueError) as e:
                log.warning("node %d gave no usable discovery answer (%s); it is not used",
                            node, e)
                continue
            n = self.cfg.num_clients
            if parts != n:
                self.refused[node] = (
                    f"node {node} has num-partitions={parts} but num_clients={n}; make them "
                    f"equal (flwr run: --federation-config 'num-supernodes={n}'; a SuperNode: "
                    f"--node-config 'partition-id=I num-partitions={n}')")
                log.warning("%s", self.refused[node])
                continue
            if not 0 <= pid < parts:
                self.refused[node] = f"node {node} claims partition-id={pid}, not in [0, {parts})"
                log.warning("%s", self.refused[node])
                continue
            answers[node] = pid
        return answers

    def _number(self, new: list[int]) -> None:
        """assign: the lowest free partition ids to ``new`` nodes, in node-id order."""
        n = self.cfg.num_clients
        taken = set(self.nodes)
        free = (p for p in range(n) if p not in taken)
        for node in sorted(new):
            pid = next(free, None)
            if pid is None:
                self.refused[node] = (
                    f"node {node} is one more node than num_clients={n} partitions; make them "
                    f"equal (flwr run: --federation-config 'num-supernodes={n}')")
                log.warning("%s", self.refused[node])
                continue
            self.nodes[pid] = node
            self.pid_of[node] = pid

    def refresh(self, grid: Grid, need: int = 0, wait: float = 0.0) -> list[int]:
        """Update the table (new, gone, returning nodes); wait up to ``wait`` s for ``need``."""
        t0 = time.monotonic()
        if self.assign is None:
            self.assign = assigns_partitions(self.cfg, grid)
        while True:
            self.online = set(grid.get_node_ids())
            if self.assign:
                new = [n for n in self.online if n not in self.pid_of and n not in self.refused]
                # the first numbering waits for every node (or the deadline): numbered in
                # batches as they connect, partitions would depend on who came first
                if new and (self.nodes or len(self.online) >= self.cfg.num_clients
                            or time.monotonic() - t0 >= wait):
                    self._number(new)
                probe = sorted(n for n in self.online if n in self.suspect)
            else:
                probe = sorted(n for n in self.online if n not in self.refused
                               and (n not in self.pid_of or n in self.suspect))
            if probe and self.assign:
                # only liveness matters: the node's partition is the one it was given
                for node in self._query(grid, probe, self.cfg.server.query_timeout):
                    if node in self.pid_of:
                        log.warning("client %d (node %d) answers again and takes part",
                                    self.pid_of[node], node)
                        self.suspect.discard(node)
            elif probe:
                answers = self._query(grid, probe, self.cfg.server.query_timeout)
                for node, pid in sorted(answers.items()):
                    self._admit(node, pid)
                for node in probe:
                    if node not in answers and node in self.pid_of:
                        self.suspect.add(node)
            avail = self.available()
            if len(avail) >= need or time.monotonic() - t0 >= wait:
                return avail
            time.sleep(min(1.0, max(0.05, wait / 100)))

    def _admit(self, node: int, pid: int) -> None:
        old = self.nodes.get(pid)
        if old is not None and old != node:
            if old in self.online and old not in self.suspect:
                log.warning("node %d also claims partition %d, held by node %d; it is not used",
                            node, pid, old)
                return
            self.pid_of.pop(old, None)
            self.has_setup.discard(old)
        if node in self.suspect:
            log.warning("client %d (node %d) answers again and takes part", pid, node)
        self.nodes[pid] = node
        self.pid_of[node] = pid
        self.suspect.discard(node)

    def connect(self, grid: Grid) -> list[int]:
        """Initial discovery: wait for every partition, go on with at least the minimum."""
        srv, n = self.cfg.server, self.cfg.num_clients
        avail = self.refresh(grid, need=n, wait=srv.connect_timeout)
        if len(avail) < srv.min_available_nodes:
            reasons = "; ".join(sorted(set(self.refused.values()))[:3])
            raise UserError(
                f"only {len(avail)} usable Flower SuperNode(s) after {srv.connect_timeout:g} s "
                f"(server.min_available_nodes={srv.min_available_nodes}, num_clients={n}): "
                + (reasons or "start more SuperNodes (flwr run: --federation-config "
                   f"'num-supernodes={n}'), or raise server.connect_timeout"))
        if len(avail) < n:
            missing = sorted(set(range(n)) - set(avail))
            log.warning("%d of %d partitions have a SuperNode; no node for partitions %s yet "
                        "(they join when their node connects)", len(avail), n, missing[:20])
        self.connected = True
        return avail

    def before_round(self, grid: Grid, server_round: int, completed_round: int) -> list[int]:
        """Pick up joins, leaves and returns; wait (bounded) if too few nodes are left."""
        srv = self.cfg.server
        avail = self.refresh(grid, need=srv.min_available_nodes, wait=srv.connect_timeout)
        if len(avail) < srv.min_available_nodes:
            raise RuntimeError(
                f"round {server_round}: only {len(avail)} node(s) available after waiting "
                f"{srv.connect_timeout:g} s, server.min_available_nodes={srv.min_available_nodes}; "
                f"rounds up to {completed_round} are checkpointed: restart the nodes and "
                "rerun with server.resume=true")
        return avail

    # ---- during a round -------------------------------------------------------------------------
    def lost(self, node: int, server_round: int, why: str) -> int:
        """A sampled node did not deliver: log it by id, probe it before its next use."""
        pid = self.pid(node)
        log.warning("round %d: client %d (node %d) %s; the round goes on without it",
                    server_round, pid, node, why)
        self.suspect.add(node)
        self.has_setup.discard(node)   # a restarted node has lost its setup: send it again
        return pid


def assigns_partitions(cfg, grid: Grid) -> bool:
    """Whether the server numbers the nodes itself (``server.partitions``; auto: on Flower's
    simulation engine, whose nodes all read the same data and differ only by a number)."""
    mode = cfg.server.partitions
    if mode != "auto":
        return mode == "assign"
    from flwr.superlink.grid import InMemoryGrid as SimulationGrid

    return isinstance(grid, SimulationGrid)
