"""Client-side halves of the methods: what a client trains and what it sends back.

Every learner starts from the same frozen ticket (rebuilt from the seed + the server's packed
mask) and the global payload of the round, trains locally, and returns one wire payload. State
that must outlive a round (a client's own score magnitudes for the 1-bit votes) is returned as a
flat tensor for the ClientApp to keep in Flower's node ``Context.state``.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from fedticket.core import MaskEnforcer, SupermaskNet
from fedticket.fl import wire
from fedticket.fl.config import FLConfig
from fedticket.fl.model import Ticket, make_optimizer, train_epochs
from fedticket.fl.vector import WeightVector


def client_seed(cfg: FLConfig, server_round: int, partition_id: int, phase: int) -> int:
    """One seed per (run seed, round, client, phase): reruns repeat every random draw."""
    return (cfg.seed * 1_000_003 + server_round * 10_007 + partition_id * 101 + phase) % (2**63)


class Learner:
    """Base: load the global payload, train, emit the update, expose an evaluation model."""

    def __init__(self, cfg: FLConfig, ticket: Ticket, partition_id: int,
                 local_state: torch.Tensor | None = None):
        self.cfg = cfg
        self.ticket = ticket
        self.partition_id = partition_id

    def load_global(self, array) -> None:
        raise NotImplementedError

    def module(self) -> nn.Module:
        """The module trained (and used in forward)."""
        raise NotImplementedError

    def optimizer(self) -> torch.optim.Optimizer:
        raise NotImplementedError

    def train(self, x, y, server_round: int, max_steps: int | None = None,
              epochs: int | None = None) -> tuple[float, int]:
        torch.manual_seed(client_seed(self.cfg, server_round, self.partition_id, 1))
        g = torch.Generator().manual_seed(client_seed(self.cfg, server_round, self.partition_id, 2))
        opt = self.optimizer()
        hook = self._hook(opt)
        try:
            return train_epochs(self.module(), opt, x, y, epochs=epochs or self.cfg.train.local_epochs,
                                batch_size=self.cfg.train.batch_size, generator=g,
                                max_steps=self.cfg.train.max_steps if max_steps is None else max_steps)
        finally:
            if hook is not None:
                hook.remove()

    def _hook(self, opt):
        return None

    def update(self, server_round: int):
        raise NotImplementedError

    def eval_model(self) -> nn.Module:
        raise NotImplementedError

    def local_state(self) -> torch.Tensor | None:
        return None


class SupermaskLearner(Learner):
    """hidenseek (sign) and binary-mask (binary): train scores, send 1 bit per kept weight.

    With ``aggregation=vote`` the global payload is packed bits: the client keeps its own score
    magnitudes across rounds (``Context.state``) and takes only the signs/bits from the server.
    With ``mean_score`` the global payload is the averaged float scores themselves.
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
        m = copy.deepcopy(self.ticket.model)
        m.load_state_dict(self.net.effective_state_dict())
        return m.eval()

    def local_state(self):
        return self.net.score_vector() if self.keep else None


class FedPMLearner(Learner):
    """FedPM: scores = logit(global theta); train with sampled masks; send one packed sample."""

    def __init__(self, cfg, ticket, partition_id, local_state=None):
        super().__init__(cfg, ticket, partition_id)
        self.net = SupermaskNet(ticket.model, ticket.mask, kind="bernoulli", score_init="ones",
                                seed=cfg.seed, bernoulli_eval=cfg.fedpm.eval_mask)

    def load_global(self, array) -> None:
        theta = wire.decode_floats_array(array, self.net.num_kept)
        self.net.load_probabilities(theta, eps=self.cfg.fedpm.clip)

    def module(self):
        return self.net

    def optimizer(self):
        return make_optimizer(self.net.scores.parameters(), self.cfg, self.cfg.train.lr)

    def train(self, x, y, server_round, max_steps=None, epochs=None):
        self.net.set_sample_seed(client_seed(self.cfg, server_round, self.partition_id, 4))
        return super().train(x, y, server_round, max_steps, epochs)

    def update(self, server_round):
        self.net.set_sample_seed(client_seed(self.cfg, server_round, self.partition_id, 5))
        return wire.bits_array(self.net.mask_bits())

    def eval_model(self):
        self.net.set_sample_seed(client_seed(self.cfg, 0, self.partition_id, 6))
        self.net.eval()
        m = copy.deepcopy(self.ticket.model)
        m.load_state_dict(self.net.effective_state_dict())
        self.net.train()
        return m.eval()


class FedAvgLearner(Learner):
    """FedAvg: train float32 weights (dense, or only the kept ones with a MaskEnforcer)."""

    def __init__(self, cfg, ticket, partition_id, local_state=None, subnet=False):
        super().__init__(cfg, ticket, partition_id)
        self.model = copy.deepcopy(ticket.model)
        for p in self.model.parameters():
            p.requires_grad_(True)
        self.subnet = subnet
        self.vec = WeightVector(self.model, ticket.mask if subnet else None)

    def load_global(self, array) -> None:
        self.vec.scatter(self.model, wire.decode_floats_array(array, self.vec.numel))

    def module(self):
        return self.model

    def optimizer(self):
        return make_optimizer(self.model.parameters(), self.cfg, self.cfg.train.weight_lr)

    def _hook(self, opt):
        return MaskEnforcer(self.model, self.ticket.mask, opt) if self.subnet else None

    def update(self, server_round):
        return wire.floats_array(self.vec.gather(self.model))

    def eval_model(self):
        return self.model.eval()


def make_learner(cfg: FLConfig, ticket: Ticket, partition_id: int,
                 local_state: torch.Tensor | None = None) -> Learner:
    if cfg.method == "hidenseek":
        return SupermaskLearner(cfg, ticket, partition_id, local_state, kind="sign")
    if cfg.method == "binary-mask":
        return SupermaskLearner(cfg, ticket, partition_id, local_state, kind="binary")
    if cfg.method == "fedpm":
        return FedPMLearner(cfg, ticket, partition_id)
    return FedAvgLearner(cfg, ticket, partition_id, subnet=cfg.method == "fedavg-subnet")
