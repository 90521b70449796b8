"""FedAvg on float32 weights, every floating-point state entry (McMahan et al., 2017).

Uplink and downlink: ``fedticket.f32`` of every weight. Aggregation: example-weighted mean.
The ticket is dense (``dense=True``): nothing is pruned, ``density`` is ignored.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from functools import cached_property

import torch

from fedticket.core.apply import MaskEnforcer
from fedticket.fl import wire
from fedticket.fl.methods.base import Learner, Method
from fedticket.fl.model import make_optimizer
from fedticket.fl.vector import WeightVector


def weighted_mean(vectors: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    """Example-weighted mean, accumulated in float64."""
    total = float(sum(weights))
    acc = torch.zeros(vectors[0].numel(), dtype=torch.float64)
    for v, w in zip(vectors, weights, strict=True):
        acc += v.reshape(-1).double() * (float(w) / total)
    return acc.float()


class FedAvgLearner(Learner):
    """Train float32 weights (dense, or only the kept ones with a MaskEnforcer)."""

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


class FedAvgMethod(Method):
    name = "fedavg"
    uplink_kind = wire.F32
    dense = True
    subnet = False

    @cached_property
    def vec(self) -> WeightVector:
        return WeightVector(self.ticket.model, self.ticket.mask if self.subnet else None)

    @property
    def uplink_values(self) -> int:
        return self.vec.numel

    def initial_global(self):
        return wire.floats_array(self.vec.gather(self.ticket.model))

    def aggregate(self, server_round, updates, weights, current):
        return wire.floats_array(weighted_mean(updates, weights))

    def eval_model(self, global_array, server_round):
        m = copy.deepcopy(self.ticket.model)
        self.vec.scatter(m, wire.decode_floats_array(global_array, self.vec.numel))
        return m.eval()

    def learner(self, partition_id, local_state=None):
        return FedAvgLearner(self.cfg, self.ticket, partition_id, subnet=self.subnet)
