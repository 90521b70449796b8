"""FedPM (Isik et al., 2023): a Bernoulli mask over the frozen ticket.

Clients train logits of keep-probabilities with sampled masks and send one packed mask sample
(``fedticket.bits``); the server resets a Beta(prior, prior) each round, updates it with the
samples and sends the posterior's keep-probabilities back as ``fedticket.f32``.

``fedpm.keep_priors`` (off by default, so existing numbers stay): the paper's Bayesian
aggregation proper, whose Beta(alpha, beta) accumulates the samples across rounds and is reset to
Beta(prior, prior) every ``fedpm.prior_reset_every`` rounds (0 = never; 1 = the per-round reset
above). The counts are in the server checkpoint (``state()``): a resumed run continues them.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property

import torch

from fedticket.core.supermask import SupermaskNet
from fedticket.fl import wire
from fedticket.fl.methods.base import Learner, Method, client_seed, plain_copy
from fedticket.fl.model import make_optimizer


def beta_posterior_theta(samples: Sequence[torch.Tensor], prior: float, clip: float) -> torch.Tensor:
    """Beta(prior, prior) reset every round, updated with the clients' mask samples.

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


def accumulate_beta(alpha: torch.Tensor, beta: torch.Tensor, samples: Sequence[torch.Tensor]
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Add the clients' mask samples to Beta counts (ones to alpha, zeros to beta)."""
    ones = torch.zeros_like(alpha, dtype=torch.float64)
    for s in samples:
        ones += s.reshape(-1).double()
    return alpha.double() + ones, beta.double() + (len(samples) - ones)


def beta_theta(alpha: torch.Tensor, beta: torch.Tensor, clip: float) -> torch.Tensor:
    """Posterior mode where it lies in [0, 1] (alpha, beta >= 1, not both 1), else the mean;
    clipped. With a per-round reset and prior >= 1 this is :func:`beta_posterior_theta`."""
    mode = (alpha - 1) / (alpha + beta - 2).clamp_min(1e-12)
    mean = alpha / (alpha + beta)
    theta = torch.where((alpha >= 1) & (beta >= 1) & (alpha + beta > 2), mode, mean)
    return theta.clamp(clip, 1 - clip).float()


def _bernoulli_net(cfg, ticket) -> SupermaskNet:
    return SupermaskNet(ticket.model, ticket.mask, kind="bernoulli", score_init="ones",
                        seed=cfg.seed, bernoulli_eval=cfg.fedpm.eval_mask)


class FedPMLearner(Learner):
    """scores = logit(global theta); train with sampled masks; send one packed sample."""

    def __init__(self, cfg, ticket, partition_id, local_state=None):
        super().__init__(cfg, ticket, partition_id)
        self.net = _bernoulli_net(cfg, ticket)

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
        m = plain_copy(self.ticket.model, self.net.effective_state_dict())
        self.net.train()
        return m


class FedPMMethod(Method):
    name = "fedpm"

    @cached_property
    def _net(self) -> SupermaskNet:
        return _bernoulli_net(self.cfg, self.ticket)

    def initial_global(self):
        return wire.floats_array(torch.full((self.ticket.kept,), self.cfg.fedpm.theta_init))

    _alpha: torch.Tensor | None = None
    _beta: torch.Tensor | None = None

    def aggregate(self, server_round, updates, weights, current):
        c = self.cfg.fedpm
        if not c.keep_priors:
            return wire.floats_array(beta_posterior_theta(updates, c.prior, c.clip))
        reset = c.prior_reset_every and (server_round - 1) % c.prior_reset_every == 0
        if self._alpha is None or reset:
            self._alpha = torch.full((self.ticket.kept,), float(c.prior), dtype=torch.float64)
            self._beta = self._alpha.clone()
        self._alpha, self._beta = accumulate_beta(self._alpha, self._beta, updates)
        return wire.floats_array(beta_theta(self._alpha, self._beta, c.clip))

    def eval_model(self, global_array, server_round):
        theta = wire.decode_floats_array(global_array, self.ticket.kept)
        self._net.load_probabilities(theta, eps=self.cfg.fedpm.clip)
        self._net.set_sample_seed(self.cfg.seed * 1_000_003 + server_round)
        self._net.eval()
        return plain_copy(self.ticket.model, self._net.effective_state_dict())

    def learner(self, partition_id, local_state=None):
        return FedPMLearner(self.cfg, self.ticket, partition_id)

    # ---- checkpointed state: with keep_priors the Beta counts (Method.state) ------------------
    def state(self):
        if not self.cfg.fedpm.keep_priors:
            return super().state()
        if self._alpha is None:   # before round 1: the prior round 1 would start from
            prior = torch.full((self.ticket.kept,), float(self.cfg.fedpm.prior), dtype=torch.float64)
            return {**super().state(), "alpha": prior, "beta": prior.clone()}
        return {**super().state(), "alpha": self._alpha, "beta": self._beta}

    def load_state(self, state):
        super().load_state(state)
        if self.cfg.fedpm.keep_priors:
            self._alpha, self._beta = state["alpha"].double(), state["beta"].double()
