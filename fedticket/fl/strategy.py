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
    rejected: int = 0
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


# ---------------------------------------------------------------------------------------------
# The shared pipeline
# ---------------------------------------------------------------------------------------------
class TicketStrategy(Strategy):
    """One Flower strategy for every method; subclasses define the payloads and the aggregation."""

    method = ""
    uplink_kind = wire.BITS

    def __init__(self, cfg: FLConfig, ticket: Ticket, nodes: dict[int, int]):
        self.cfg = cfg
        self.ticket = ticket
        self.nodes = dict(nodes)                       # partition id -> node id
        self.pid_of = {n: p for p, n in self.nodes.items()}
        self.stats: dict[int, RoundStats] = {}
        self.has_setup: set[int] = set()               # nodes that acknowledged the setup
        self._setup = self._make_setup()
        self._expected: dict[int, int] = {}            # node id -> partition id this round

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
    def sample(self, server_round: int, k: int, salt: int) -> list[int]:
        """Seeded choice of ``k`` partition ids: the same seed samples the same clients."""
        rng = np.random.default_rng([self.cfg.seed, salt, server_round])
        return sorted(int(p) for p in rng.choice(self.cfg.num_clients, size=k, replace=False))

    def _messages(self, pids: list[int], arrays: ArrayRecord, server_round: int, mtype: str,
                  stats: RoundStats, is_train: bool) -> list[Message]:
        msgs = []
        self._expected = {}
        for pid in pids:
            node = self.nodes[pid]
            content = RecordDict({GLOBAL: arrays,
                                  "config": ConfigRecord({"round": server_round,
                                                          "partition-id": pid})})
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
        pids = self.sample(server_round, self.cfg.clients_per_round, salt=11)
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
        replies.sort(key=lambda m: self.pid_of.get(m.metadata.src_node_id, 1 << 62))
        for msg in replies:
            pid = self.pid_of.get(msg.metadata.src_node_id, -1)
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
        missing = len(stats.sampled) - len(replies)
        if missing > 0:
            stats.rejected += missing
            log.warning("round %d: %d sampled client(s) sent no reply", server_round, missing)
        if not updates:
            log.warning("round %d: no valid update; the global model stays as it was", server_round)
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
        pids = self.sample(server_round, self.cfg.personal_clients, salt=13)
        return self._messages(pids, arrays, server_round, MessageType.EVALUATE, stats, False)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]
                           ) -> MetricRecord | None:
        stats = self.stats.setdefault(server_round, RoundStats())
        accs, ns = [], []
        for msg in replies:
            pid = self.pid_of.get(msg.metadata.src_node_id, -1)
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

    def start(self, grid: Grid, initial_arrays: ArrayRecord, *args, **kwargs):
        self.begin(initial_arrays)
        return super().start(grid, initial_arrays, *args, **kwargs)


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

    def __init__(self, cfg, ticket, nodes, kind: str):
        super().__init__(cfg, ticket, nodes)
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

    def __init__(self, cfg, ticket, nodes):
        super().__init__(cfg, ticket, nodes)
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

    def __init__(self, cfg, ticket, nodes, subnet: bool):
        super().__init__(cfg, ticket, nodes)
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


def make_strategy(cfg: FLConfig, ticket: Ticket, nodes: dict[int, int]) -> TicketStrategy:
    if cfg.method in ("hidenseek", "binary-mask"):
        kind = "sign" if cfg.method == "hidenseek" else "binary"
        cls = ScoreMeanStrategy if cfg.aggregation == "mean_score" else SupermaskVoteStrategy
        return cls(cfg, ticket, nodes, kind=kind)
    if cfg.method == "fedpm":
        return FedPMStrategy(cfg, ticket, nodes)
    return FedAvgStrategy(cfg, ticket, nodes, subnet=cfg.method == "fedavg-subnet")
