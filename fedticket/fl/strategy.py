"""Server-side halves of the methods: Flower ``Strategy`` subclasses over one shared pipeline.

:class:`TicketStrategy` does everything the methods share: seeded client sampling by partition
id, the one-time setup broadcast (config with the seed + packed SynFlow mask), byte counting from
the real messages, reply validation (a malformed reply is logged and left out; the round goes on),
personalised evaluation rounds. A method only says how its payloads decode and aggregate:

===============  =========================  ===========================================
method           uplink payload             aggregation -> downlink payload
===============  =========================  ===========================================
hidenseek        packed signs (1 bit/kept)  weighted majority vote -> packed signs
binary-mask      packed {0,1} (1 bit/kept)  weighted majority vote -> packed mask
  (mean_score)   float32 scores             weighted mean -> float32 scores
fedpm            packed Bernoulli sample    Beta posterior (reset each round) -> float32 theta
fedavg           float32, every weight      weighted mean -> float32
fedavg-subnet    float32, kept weights      weighted mean -> float32
===============  =========================  ===========================================
"""

from __future__ import annotations

import copy
import json
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy
from torch import nn

from fedticket.core import SupermaskNet
from fedticket.errors import UserError
from fedticket.fl import wire
from fedticket.fl.config import FLConfig, config_to_json
from fedticket.fl.model import Ticket
from fedticket.fl.vector import WeightVector

log = logging.getLogger("fedticket.fl")

GLOBAL = "global"   # ArrayRecord name of the model payload the server sends
UPDATE = "update"   # ArrayRecord name of the payload a client sends back
SETUP = "setup"     # ArrayRecord name of the one-time setup (config + packed mask)
METRICS = "metrics"


# ---------------------------------------------------------------------------------------------
# Aggregation rules (pure functions, unit-tested)
# ---------------------------------------------------------------------------------------------
def weighted_majority_vote(bits: Sequence[torch.Tensor], weights: Sequence[float],
                           previous: torch.Tensor) -> torch.Tensor:
    """Per entry: True if the weighted votes for True outweigh those for False.

    A vote is ``+w`` for a True bit and ``-w`` for a False bit; a tie (including no votes) keeps
    ``previous``. Integer weights (example counts) are summed exactly in int64.
    """
    previous = previous.reshape(-1).bool()
    if not bits:
        return previous.clone()
    exact = all(float(w).is_integer() for w in weights)
    dtype = torch.int64 if exact else torch.float64
    tally = torch.zeros(previous.numel(), dtype=dtype)
    for b, w in zip(bits, weights, strict=True):
        b = b.reshape(-1).bool()
        if b.numel() != previous.numel():
            raise ValueError(f"vote has {b.numel()} bits, expected {previous.numel()}")
        ww = int(w) if exact else float(w)
        tally += torch.where(b, ww, -ww).to(dtype)
    return torch.where(tally > 0, True, torch.where(tally < 0, False, previous))


def weighted_mean(vectors: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    """Example-weighted mean, accumulated in float64."""
    total = float(sum(weights))
    acc = torch.zeros(vectors[0].numel(), dtype=torch.float64)
    for v, w in zip(vectors, weights, strict=True):
        acc += v.reshape(-1).double() * (float(w) / total)
    return acc.float()


def beta_posterior_theta(samples: Sequence[torch.Tensor], prior: float, clip: float) -> torch.Tensor:
    """FedPM: Beta(prior, prior) reset every round, updated with the clients' mask samples.

    Returns the posterior mode (alpha-1)/(alpha+beta-2) (the mean when the mode is undefined),
    clipped to [clip, 1-clip] so the clients' logits stay finite.
    """
    k = len(samples)
    ones = torch.zeros(samples[0].numel(), dtype=torch.float64)
    for s in samples:
        ones += s.reshape(-1).double()
    alpha = prior + ones
    beta = prior + (k - ones)
    if 2 * prior + k > 2 and prior >= 1:
        theta = (alpha - 1) / (alpha + beta - 2)
    else:
        theta = alpha / (alpha + beta)
    return theta.clamp(clip, 1 - clip).float()


# ---------------------------------------------------------------------------------------------
# Bookkeeping
# ---------------------------------------------------------------------------------------------
@dataclass
class RoundStats:
    """What one round moved and cost; filled by the strategy, written out by the recorder."""

    sampled: list[int] = field(default_factory=list)
    uplink_bytes: int = 0              # model payload bytes in all train replies received
    downlink_bytes: int = 0            # model payload bytes in all train instructions (incl. setup)
    setup_bytes: int = 0               # of which one-time setup (config + packed mask)
    accepted: int = 0
    rejected: int = 0                  # malformed replies + missing replies
    missing: list[int] = field(default_factory=list)  # partition ids that sent no valid reply
    uplink_per_reply: list[int] = field(default_factory=list)
    downlink_per_message: list[int] = field(default_factory=list)
    train_seconds: list[float] = field(default_factory=list)     # local optimisation only
    client_seconds: list[float] = field(default_factory=list)    # whole train handler
    train_loss: list[float] = field(default_factory=list)
    eval_downlink_bytes: int = 0
    personalized_accuracy: float | None = None
    personalized_clients: int = 0
    started: float = 0.0
    train_wall_seconds: float = 0.0


class Rejected(ValueError):
    """A reply left out of the aggregate; the message is the logged reason."""


def _sent_ids(msgs: Iterable[Message]) -> dict[str, int]:
    """message id -> destination node, for messages the Grid has pushed (it sets their ids)."""
    return {m.metadata.message_id: m.metadata.dst_node_id for m in msgs
            if m.metadata.message_id}


def _origin(reply: Message, sent: dict[str, int]) -> int:
    """The node a reply is about. An error the SuperLink makes up for an unreachable node
    (``Node Unavailable``) does not come from that node, but it answers that node's message."""
    rid = reply.metadata.reply_to_message_id
    if rid and rid in sent:
        return sent[rid]
    return reply.metadata.src_node_id


# ---------------------------------------------------------------------------------------------
# The shared pipeline
# ---------------------------------------------------------------------------------------------
class TicketStrategy(Strategy):
    """One Flower strategy for every method; subclasses define the payloads and the aggregation."""

    method = ""
    uplink_kind = wire.BITS

    def __init__(self, cfg: FLConfig, ticket: Ticket, nodes: dict[int, int] | None = None,
                 run_key: str = ""):
        self.cfg = cfg
        self.ticket = ticket
        self.nodes = dict(nodes or {})                 # partition id -> node id
        self.pid_of = {n: p for p, n in self.nodes.items()}
        self.suspect: set[int] = set()                 # nodes that missed a reply: probe first
        self.refused: dict[int, str] = {}              # nodes not admitted, with the reason
        self.online: set[int] = set(self.pid_of)
        self.stats: dict[int, RoundStats] = {}
        self.has_setup: set[int] = set()               # nodes that acknowledged the setup
        self.run_key = run_key                         # keys the clients' on-disk local state
        self.completed_round = 0                       # last round whose checkpoint is on disk
        self._setup = self._make_setup()
        self._expected: dict[int, int] = {}            # node id -> partition id this round
        self._sent: list[Message] = []                 # this phase's messages (ids set on push)

    # ---- what a method defines ------------------------------------------------------------------
    @property
    def uplink_values(self) -> int:
        """Number of entries (bits or floats) in one client update."""
        return self.ticket.kept

    def initial_global(self) -> Array:
        raise NotImplementedError

    def decode_update(self, array) -> torch.Tensor:
        if self.uplink_kind == wire.BITS:
            return wire.decode_bits_array(array, self.uplink_values)
        return wire.decode_floats_array(array, self.uplink_values)

    def aggregate(self, server_round: int, updates: list[torch.Tensor], weights: list[int],
                  current: Array) -> Array:
        raise NotImplementedError

    def eval_model(self, global_array: Array, server_round: int) -> nn.Module:
        raise NotImplementedError

    # ---- setup ----------------------------------------------------------------------------------
    def _make_setup(self) -> ArrayRecord:
        """Config (incl. the seed) + packed SynFlow mask + its layout: sent once per client."""
        mask = self.ticket.mask
        layout = json.dumps([[k, list(v.shape)] for k, v in mask.items()]).encode()
        return ArrayRecord({
            "config": wire.raw_array(config_to_json(self.cfg).encode(), "fedticket.json"),
            "layout": wire.raw_array(layout, "fedticket.json"),
            "mask": wire.bits_array(mask.flat()),
        })

    def initial_arrays(self) -> ArrayRecord:
        return wire.record(self.initial_global())

    # ---- sampling -------------------------------------------------------------------------------
    def available(self) -> list[int]:
        """Partition ids whose node is online, admitted and not suspected of being down."""
        return sorted(p for p, n in self.nodes.items()
                      if n in self.online and n not in self.suspect)

    def sample(self, server_round: int, k: int, salt: int,
               available: Sequence[int] | None = None) -> list[int]:
        """Seeded choice of ``k`` partition ids among the available ones.

        With every client available this is ``choice(num_clients, k)``: the same seed samples
        the same clients whether or not the run was resumed; faults change only that round.
        """
        pool = np.arange(self.cfg.num_clients) if available is None else np.asarray(sorted(available))
        rng = np.random.default_rng([self.cfg.seed, salt, server_round])
        k = min(k, len(pool))
        if k == 0:
            return []
        return sorted(int(p) for p in rng.choice(pool, size=k, replace=False))

    # ---- membership: which node holds which partition ------------------------------------------
    def _query(self, grid: Grid, node_ids: Sequence[int], timeout: float) -> dict[int, int]:
        """Ask ``node_ids`` which partition they hold; node id -> partition id of valid answers."""
        msgs = [Message(RecordDict({"config": ConfigRecord({"round": 0})}), dst_node_id=n,
                        message_type=MessageType.QUERY) for n in node_ids]
        answers: dict[int, int] = {}
        replies = list(grid.send_and_receive(msgs, timeout=timeout))
        sent = _sent_ids(msgs)
        for reply in replies:
            node = _origin(reply, sent)
            try:
                if reply.has_error():
                    raise Rejected(f"error: {reply.error.reason}")
                m = reply.content.metric_records[METRICS]
                pid, parts = int(m["partition-id"]), int(m["num-partitions"])
            except (Rejected, KeyError, TypeError, ValueError) as e:
                log.warning("node %d gave no usable discovery answer (%s); it is not used",
                            node, e)
                continue
            if parts != self.cfg.num_clients:
                self.refused[node] = (
                    f"node {node} has num-partitions={parts} but num_clients="
                    f"{self.cfg.num_clients}; make them equal (flwr run: --federation-config "
                    f"'num-supernodes={self.cfg.num_clients}'; a SuperNode: --node-config "
                    f"'partition-id=I num-partitions={self.cfg.num_clients}')")
                log.warning("%s", self.refused[node])
                continue
            if not 0 <= pid < parts:
                self.refused[node] = f"node {node} claims partition-id={pid}, not in [0, {parts})"
                log.warning("%s", self.refused[node])
                continue
            answers[node] = pid
        return answers

    def refresh(self, grid: Grid, need: int = 0, wait: float = 0.0) -> list[int]:
        """Update the node table (new, gone, returning nodes); wait up to ``wait`` s for ``need``.

        New nodes and suspects (nodes that missed a reply) are asked which partition they hold
        before they are sampled: a node that comes back after a crash takes part again, with a
        fresh setup (its process lost the old one).
        """
        t0 = time.monotonic()
        while True:
            self.online = set(grid.get_node_ids())
            probe = sorted(n for n in self.online
                           if n not in self.refused and (n not in self.pid_of or n in self.suspect))
            if probe:
                answers = self._query(grid, probe, self.cfg.server.query_timeout)
                for node, pid in sorted(answers.items()):
                    old = self.nodes.get(pid)
                    if old is not None and old != node:
                        if old in self.online and old not in self.suspect:
                            log.warning("node %d also claims partition %d, held by node %d; "
                                        "it is not used", node, pid, old)
                            continue
                        self.pid_of.pop(old, None)
                        self.has_setup.discard(old)
                    if node in self.suspect:
                        log.warning("client %d (node %d) answers again and takes part", pid, node)
                    self.nodes[pid] = node
                    self.pid_of[node] = pid
                    self.suspect.discard(node)
                for node in probe:
                    if node not in answers and node in self.pid_of:
                        self.suspect.add(node)
            avail = self.available()
            if len(avail) >= need or time.monotonic() - t0 >= wait:
                return avail
            time.sleep(min(1.0, max(0.05, wait / 100)))

    def connect(self, grid: Grid) -> list[int]:
        """Initial discovery: wait for every partition, go on with at least the minimum."""
        srv = self.cfg.server
        avail = self.refresh(grid, need=self.cfg.num_clients, wait=srv.connect_timeout)
        if len(avail) < srv.min_available_nodes:
            reasons = "; ".join(sorted(set(self.refused.values()))[:3])
            raise UserError(
                f"only {len(avail)} usable Flower SuperNode(s) after {srv.connect_timeout:g} s "
                f"(server.min_available_nodes={srv.min_available_nodes}, num_clients="
                f"{self.cfg.num_clients}): " + (reasons or
                "start more SuperNodes (flwr run: --federation-config 'num-supernodes="
                f"{self.cfg.num_clients}'), or raise server.connect_timeout"))
        if len(avail) < self.cfg.num_clients:
            missing = sorted(set(range(self.cfg.num_clients)) - set(avail))
            log.warning("%d of %d partitions have a SuperNode; no node for partitions %s yet "
                        "(they join when their node connects)", len(avail),
                        self.cfg.num_clients, missing[:20])
        return avail

    def before_round(self, grid: Grid, server_round: int) -> list[int]:
        """Pick up joins, leaves and returns; wait (bounded) if too few nodes are left."""
        srv = self.cfg.server
        avail = self.refresh(grid, need=srv.min_available_nodes, wait=srv.connect_timeout)
        if len(avail) < srv.min_available_nodes:
            raise RuntimeError(
                f"round {server_round}: only {len(avail)} node(s) available after waiting "
                f"{srv.connect_timeout:g} s, server.min_available_nodes={srv.min_available_nodes}; "
                f"rounds up to {self.completed_round} are checkpointed: restart the nodes and "
                "rerun with server.resume=true")
        return avail

    def _lost(self, node: int, server_round: int, why: str, stats: RoundStats | None) -> None:
        """A sampled node that did not deliver: log it by id, probe it before its next use."""
        pid = self.pid_of.get(node, -1)
        log.warning("round %d: client %d (node %d) %s; the round goes on without it",
                    server_round, pid, node, why)
        self.suspect.add(node)
        self.has_setup.discard(node)   # a restarted node has lost its setup: send it again
        if stats is not None:
            stats.missing.append(pid)

    def _messages(self, pids: list[int], arrays: ArrayRecord, server_round: int, mtype: str,
                  stats: RoundStats, is_train: bool) -> list[Message]:
        msgs = []
        self._expected = {}
        for pid in pids:
            node = self.nodes[pid]
            content = RecordDict({GLOBAL: arrays,
                                  "config": ConfigRecord({"round": server_round,
                                                          "partition-id": pid,
                                                          "run-key": self.run_key,
                                                          "completed-round": self.completed_round})})
            if node not in self.has_setup:
                content[SETUP] = self._setup
            nbytes = wire.payload_nbytes(content)
            if is_train:
                stats.downlink_bytes += nbytes
                stats.downlink_per_message.append(nbytes)
                if node not in self.has_setup:
                    stats.setup_bytes += wire.payload_nbytes(RecordDict({SETUP: self._setup}))
            else:
                stats.eval_downlink_bytes += nbytes
            self._expected[node] = pid
            msgs.append(Message(content=content, dst_node_id=node, message_type=mtype))
        self._sent = msgs
        return msgs

    def _check_reply(self, msg: Message, server_round: int) -> tuple[int, MetricRecord]:
        """Common checks of a reply; raises Rejected with the reason."""
        node = msg.metadata.src_node_id
        if msg.has_error():
            raise Rejected(f"client reported an error: {msg.error.reason}")
        if node not in self._expected:
            raise Rejected(f"reply from node {node}, which was not sampled this round")
        content = msg.content
        if METRICS not in content.metric_records:
            raise Rejected(f"missing MetricRecord {METRICS!r}")
        metrics = content.metric_records[METRICS]
        for key in ("num-examples", "round"):
            if key not in metrics:
                raise Rejected(f"metrics lack {key!r}")
        n = metrics["num-examples"]
        if not isinstance(n, int) or n < 1:
            raise Rejected(f"num-examples must be a positive integer, got {n!r}")
        if metrics["round"] != server_round:
            raise Rejected(f"reply is for round {metrics['round']}, expected {server_round}")
        self.has_setup.add(node)
        return node, metrics

    # ---- Flower Strategy API --------------------------------------------------------------------
    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        stats = self.stats.setdefault(server_round, RoundStats())
        stats.started = time.perf_counter()
        pids = self.sample(server_round, self.cfg.clients_per_round, salt=11, available=self.available())
        stats.sampled = pids
        return self._messages(pids, arrays, server_round, MessageType.TRAIN, stats, True)

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        stats = self.stats[server_round]
        replies = list(replies)
        stats.train_wall_seconds = time.perf_counter() - stats.started
        current = self._current
        updates, weights = [], []
        # aggregate in partition order: float sums then do not depend on arrival order
        sent = _sent_ids(self._sent)
        replies.sort(key=lambda m: self.pid_of.get(_origin(m, sent), 1 << 62))
        expected = dict(self._expected)
        for msg in replies:
            node = _origin(msg, sent)
            pid = self.pid_of.get(node, -1)
            expected.pop(node, None)
            if msg.has_error():
                stats.rejected += 1
                self._lost(node, server_round, f"failed: {msg.error.reason}", stats)
                continue
            nbytes = wire.payload_nbytes(msg.content) if msg.has_content() else 0
            stats.uplink_bytes += nbytes  # bytes that arrived count, even if then rejected
            try:
                _, metrics = self._check_reply(msg, server_round)
                update = self.decode_update(wire.get_array(msg.content, UPDATE))
            except (Rejected, wire.MalformedPayload) as e:
                stats.rejected += 1
                log.warning("round %d: rejected the reply of client %d: %s", server_round, pid, e)
                continue
            stats.accepted += 1
            stats.uplink_per_reply.append(nbytes)
            updates.append(update)
            weights.append(int(metrics["num-examples"]))
            if "train-seconds" in metrics:
                stats.train_seconds.append(float(metrics["train-seconds"]))
            if "client-seconds" in metrics:
                stats.client_seconds.append(float(metrics["client-seconds"]))
            if "train-loss" in metrics:
                stats.train_loss.append(float(metrics["train-loss"]))
        for node in sorted(expected, key=expected.get):
            stats.rejected += 1
            self._lost(node, server_round, "sent no training reply within "
                       f"server.train_timeout={self.cfg.server.train_timeout:g} s", stats)
        if len(updates) < self.cfg.server.min_train_replies:
            log.warning("round %d: %d valid update(s), fewer than server.min_train_replies=%d; "
                        "the global model stays as it was", server_round, len(updates),
                        self.cfg.server.min_train_replies)
            return None, None
        new = self.aggregate(server_round, updates, weights, current)
        self._current = new
        agg = MetricRecord({"accepted": stats.accepted, "rejected": stats.rejected})
        if stats.train_loss:
            agg["train-loss"] = float(np.average(stats.train_loss, weights=weights))
        return wire.record(new), agg

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        every = self.cfg.eval.personal_every
        if every <= 0 or (server_round % every and server_round != self.cfg.rounds):
            return []
        stats = self.stats.setdefault(server_round, RoundStats())
        pids = self.sample(server_round, self.cfg.personal_clients, salt=13,
                           available=self.available())
        return self._messages(pids, arrays, server_round, MessageType.EVALUATE, stats, False)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]
                           ) -> MetricRecord | None:
        stats = self.stats.setdefault(server_round, RoundStats())
        accs, ns = [], []
        expected = dict(self._expected)
        sent = _sent_ids(self._sent)
        for msg in replies:
            node = _origin(msg, sent)
            pid = self.pid_of.get(node, -1)
            expected.pop(node, None)
            if msg.has_error():
                self._lost(node, server_round, f"failed its evaluation: {msg.error.reason}", None)
                continue
            try:
                _, metrics = self._check_reply(msg, server_round)
                acc = metrics.get("accuracy")
                if not isinstance(acc, float) or not 0.0 <= acc <= 1.0:
                    raise Rejected(f"accuracy must be a float in [0, 1], got {acc!r}")
            except Rejected as e:
                log.warning("round %d: rejected the evaluation of client %d: %s",
                            server_round, pid, e)
                continue
            accs.append(acc)
            ns.append(int(metrics["num-examples"]))
        for node in sorted(expected, key=expected.get):
            self._lost(node, server_round, "sent no evaluation reply within "
                       f"server.evaluate_timeout={self.cfg.server.evaluate_timeout:g} s", None)
        if not accs:
            return None
        stats.personalized_accuracy = float(np.average(accs, weights=ns))
        stats.personalized_clients = len(accs)
        return MetricRecord({"personalized-accuracy": stats.personalized_accuracy})

    def summary(self) -> None:
        log.info("%s: %d clients, %d per round, %d kept weights, uplink %s",
                 type(self).__name__, self.cfg.num_clients, self.cfg.clients_per_round,
                 self.ticket.kept, self.uplink_kind)

    def begin(self, initial_arrays: ArrayRecord) -> None:
        """Remember the starting global payload (ties of the vote fall back to it)."""
        self._current = initial_arrays["payload"]

    def start(self, grid: Grid, initial_arrays: ArrayRecord, num_rounds: int = 3,
              timeout: float | None = None, train_config: ConfigRecord | None = None,
              evaluate_config: ConfigRecord | None = None, evaluate_fn=None,
              first_round: int = 1, on_round_end=None) -> ArrayRecord:
        """The round loop (Flower's ``Strategy.start``, plus what a deployment needs).

        Differences from Flower's loop: per-phase timeouts (``server.*_timeout``), the node
        table is refreshed before every round (joins, leaves, returning nodes), the loop can
        start at ``first_round`` (resume), and ``on_round_end(round, arrays)`` runs after each
        completed round (the checkpoint). ``timeout``, if given, overrides both phase timeouts.
        """
        srv = self.cfg.server
        t_train = timeout or srv.train_timeout
        t_eval = timeout or srv.evaluate_timeout
        train_config = train_config or ConfigRecord()
        evaluate_config = evaluate_config or ConfigRecord()
        self.begin(initial_arrays)
        self.completed_round = first_round - 1
        self.summary()
        arrays = initial_arrays
        if evaluate_fn is not None and first_round == 1:
            evaluate_fn(0, arrays)
        for server_round in range(first_round, num_rounds + 1):
            self.before_round(grid, server_round)
            msgs = list(self.configure_train(server_round, arrays, train_config, grid))
            replies = grid.send_and_receive(msgs, timeout=t_train) if msgs else []
            new_arrays, _metrics = self.aggregate_train(server_round, replies)
            if new_arrays is not None:
                arrays = new_arrays
            msgs = list(self.configure_evaluate(server_round, arrays, evaluate_config, grid))
            if msgs:
                self.aggregate_evaluate(server_round,
                                        grid.send_and_receive(msgs, timeout=t_eval))
            if evaluate_fn is not None:
                evaluate_fn(server_round, arrays)
            if on_round_end is not None:
                on_round_end(server_round, arrays)
            self.completed_round = server_round
        return arrays


# ---------------------------------------------------------------------------------------------
# Methods
# ---------------------------------------------------------------------------------------------
def _plain_copy(model: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
    m = copy.deepcopy(model)
    m.load_state_dict(state)
    m.eval()
    return m


class SupermaskVoteStrategy(TicketStrategy):
    """HideNseek (kind='sign') and the binary-mask baseline (kind='binary'): 1-bit votes."""

    def __init__(self, cfg, ticket, nodes=None, kind: str = "sign", run_key: str = ""):
        super().__init__(cfg, ticket, nodes, run_key)
        self.kind = kind
        self.method = cfg.method
        self._net = SupermaskNet(ticket.model, ticket.mask, kind=kind, score_init="ones",
                                 seed=cfg.seed)

    def initial_global(self) -> Array:
        # every kept weight starts with sign +1 / kept: the initial effective net is the ticket
        return wire.bits_array(torch.ones(self.ticket.kept, dtype=torch.bool))

    def aggregate(self, server_round, updates, weights, current):
        prev = wire.decode_bits_array(current, self.ticket.kept)
        return wire.bits_array(weighted_majority_vote(updates, weights, prev))

    def global_bits(self, array: Array) -> torch.Tensor:
        return wire.decode_bits_array(array, self.ticket.kept)

    def eval_model(self, global_array, server_round):
        self._net.load_mask_bits(self.global_bits(global_array), magnitude=1.0)
        return _plain_copy(self.ticket.model, self._net.effective_state_dict())


class ScoreMeanStrategy(SupermaskVoteStrategy):
    """Ablation: clients upload float32 scores, the server averages them (FedAvg over scores)."""

    uplink_kind = wire.F32

    def initial_global(self) -> Array:
        net = SupermaskNet(self.ticket.model, self.ticket.mask, kind=self.kind,
                           score_init=self.cfg.train.score_init, seed=self.cfg.seed)
        return wire.floats_array(net.score_vector().abs())  # positive: starts from the ticket

    def aggregate(self, server_round, updates, weights, current):
        return wire.floats_array(weighted_mean(updates, weights))

    def eval_model(self, global_array, server_round):
        self._net.load_score_vector(wire.decode_floats_array(global_array, self.ticket.kept))
        return _plain_copy(self.ticket.model, self._net.effective_state_dict())


class FedPMStrategy(TicketStrategy):
    """FedPM: Bernoulli mask over the frozen ticket; clients upload one packed mask sample."""

    method = "fedpm"

    def __init__(self, cfg, ticket, nodes=None, run_key: str = ""):
        super().__init__(cfg, ticket, nodes, run_key)
        self._net = SupermaskNet(ticket.model, ticket.mask, kind="bernoulli", score_init="ones",
                                 seed=cfg.seed, bernoulli_eval=cfg.fedpm.eval_mask)

    def initial_global(self) -> Array:
        return wire.floats_array(torch.full((self.ticket.kept,), self.cfg.fedpm.theta_init))

    def aggregate(self, server_round, updates, weights, current):
        return wire.floats_array(beta_posterior_theta(updates, self.cfg.fedpm.prior,
                                                      self.cfg.fedpm.clip))

    def eval_model(self, global_array, server_round):
        theta = wire.decode_floats_array(global_array, self.ticket.kept)
        self._net.load_probabilities(theta, eps=self.cfg.fedpm.clip)
        self._net.set_sample_seed(self.cfg.seed * 1_000_003 + server_round)
        self._net.eval()
        return _plain_copy(self.ticket.model, self._net.effective_state_dict())


class FedAvgStrategy(TicketStrategy):
    """FedAvg on float32 weights: dense (mask=None) or only the SynFlow-kept weights (subnet)."""

    uplink_kind = wire.F32

    def __init__(self, cfg, ticket, nodes=None, subnet: bool = False, run_key: str = ""):
        super().__init__(cfg, ticket, nodes, run_key)
        self.method = cfg.method
        self.vec = WeightVector(ticket.model, ticket.mask if subnet else None)

    @property
    def uplink_values(self) -> int:
        return self.vec.numel

    def initial_global(self) -> Array:
        return wire.floats_array(self.vec.gather(self.ticket.model))

    def aggregate(self, server_round, updates, weights, current):
        return wire.floats_array(weighted_mean(updates, weights))

    def eval_model(self, global_array, server_round):
        m = copy.deepcopy(self.ticket.model)
        self.vec.scatter(m, wire.decode_floats_array(global_array, self.vec.numel))
        m.eval()
        return m


def make_strategy(cfg: FLConfig, ticket: Ticket, nodes: dict[int, int] | None = None,
                  run_key: str = "") -> TicketStrategy:
    if cfg.method in ("hidenseek", "binary-mask"):
        kind = "sign" if cfg.method == "hidenseek" else "binary"
        cls = ScoreMeanStrategy if cfg.aggregation == "mean_score" else SupermaskVoteStrategy
        return cls(cfg, ticket, nodes, kind=kind, run_key=run_key)
    if cfg.method == "fedpm":
        return FedPMStrategy(cfg, ticket, nodes, run_key=run_key)
    return FedAvgStrategy(cfg, ticket, nodes, subnet=cfg.method == "fedavg-subnet",
                          run_key=run_key)
