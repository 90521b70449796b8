"""HideNseek: a sign supermask over the frozen SynFlow ticket, 1 bit per kept weight.

Each client trains real-valued scores whose signs flip the frozen weights; it sends the signs
(``fedticket.bits``, ``ceil(kept/8)`` bytes + header) and keeps its own score magnitudes across
rounds (``train.keep_local_scores``). The server takes the example-weighted majority vote of the
signs (a tie keeps the previous sign) and sends the voted signs back.

``aggregation=mean_score`` is the ablation: clients upload float32 scores and the server averages
them (FedAvg over scores); the global payload is then the averaged scores themselves.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property

import torch

from fedticket.core.supermask import SupermaskNet
from fedticket.fl import wire
from fedticket.fl.methods.base import Learner, Method, client_seed, plain_copy
from fedticket.fl.methods.fedavg import weighted_mean
from fedticket.fl.model import make_optimizer
from fedticket.fl.robust import make_reputation


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


class SupermaskLearner(Learner):
    """Train scores, send 1 bit per kept weight (vote) or the float scores (mean_score).

    With ``aggregation=vote`` the global payload is packed bits: the client keeps its own score
    magnitudes across rounds and takes only the signs/bits from the server.
    """

    def __init__(self, cfg, ticket, partition_id, local_state=None, kind="sign"):
        super().__init__(cfg, ticket, partition_id)
        self.vote = cfg.aggregation == "vote"
        self.keep = self.vote and cfg.train.keep_local_scores
        self.net = SupermaskNet(ticket.model, ticket.mask, kind=kind,
                                score_init=cfg.train.score_init,
                                seed=client_seed(cfg, 0, partition_id, 3))
        if local_state is not None and self.keep:
            self.net.load_score_vector(local_state)

    def load_global(self, array) -> None:
        if self.vote:
            self.net.load_mask_bits(wire.decode_bits_array(array, self.net.num_kept))
        else:
            self.net.load_score_vector(wire.decode_floats_array(array, self.net.num_kept))

    def module(self):
        return self.net

    def optimizer(self):
        return make_optimizer(self.net.scores.parameters(), self.cfg, self.cfg.train.lr)

    def update(self, server_round):
        if self.vote:
            return wire.bits_array(self.net.mask_bits())
        return wire.floats_array(self.net.score_vector())

    def eval_model(self):
        return plain_copy(self.ticket.model, self.net.effective_state_dict())

    def local_state(self):
        return self.net.score_vector() if self.keep else None


class HideNseekMethod(Method):
    """The weighted majority vote of 1-bit signs (``aggregation=vote``, the paper's)."""

    name = "hidenseek"
    kind = "sign"

    @property
    def uplink_kind(self) -> str:
        return wire.F32 if self.cfg.aggregation == "mean_score" else wire.BITS

    @cached_property
    def reputation(self):
        return make_reputation(self.cfg)

    @cached_property
    def _net(self) -> SupermaskNet:
        return SupermaskNet(self.ticket.model, self.ticket.mask, kind=self.kind,
                            score_init="ones", seed=self.cfg.seed)

    def initial_global(self):
        if self.cfg.aggregation == "mean_score":
            net = SupermaskNet(self.ticket.model, self.ticket.mask, kind=self.kind,
                               score_init=self.cfg.train.score_init, seed=self.cfg.seed)
            return wire.floats_array(net.score_vector().abs())  # positive: starts from the ticket
        # every kept weight starts with sign +1 / kept: the initial effective net is the ticket
        return wire.bits_array(torch.ones(self.ticket.kept, dtype=torch.bool))

    def aggregate(self, server_round, updates, weights, current):
        if self.cfg.aggregation == "mean_score":
            return wire.floats_array(weighted_mean(updates, weights))
        prev = wire.decode_bits_array(current, self.ticket.kept)
        if self.reputation is not None:   # robust.kind=reputation; clients: set by the strategy
            weights = self.reputation.weights(self.clients, updates, weights, prev)
        return wire.bits_array(weighted_majority_vote(updates, weights, prev))

    def eval_model(self, global_array, server_round):
        if self.cfg.aggregation == "mean_score":
            self._net.load_score_vector(wire.decode_floats_array(global_array, self.ticket.kept))
        else:
            self._net.load_mask_bits(wire.decode_bits_array(global_array, self.ticket.kept),
                                     magnitude=1.0)
        return plain_copy(self.ticket.model, self._net.effective_state_dict())

    def learner(self, partition_id, local_state=None):
        return SupermaskLearner(self.cfg, self.ticket, partition_id, local_state, kind=self.kind)
