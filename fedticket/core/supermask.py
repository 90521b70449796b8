"""Supermasks: frozen weights × pruning mask × m(score), trained through a straight-through estimator.

One mechanism, three mask functions, so federated baselines differ only in ``kind``:

* ``sign``      m = +1 if score >= 0 else -1   (HideNseek's sign supermask)
* ``binary``    m = 1 if score > 0 else 0      (edge-popup / FedMask-style binary supermask)
* ``bernoulli`` m ~ Bernoulli(sigmoid(score))   (FedPM's stochastic mask)

Only the entries the pruning mask keeps carry a score (one flat vector per layer, kept entries in
row-major order), so "one bit per kept weight" is literal: ``mask_bits()`` has exactly
``prune_mask.num_kept`` entries, in the order every client and the server agree on.

Gradients: sign and binary pass the score gradient straight through the step function (identity
STE); bernoulli uses ``sample + p - p.detach()`` so the gradient flows through sigmoid, as FedPM.
The wrapped model's own parameters are frozen (``train_other=False``) and the forward pass uses
``torch.func.functional_call``, so the model's parameter names and state_dict never change.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.func import functional_call

from fedticket.core.mask import Mask

KINDS = ("sign", "binary", "bernoulli")
SCORE_INITS = ("kaiming", "uniform", "normal", "ones")


class _SignSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, s):
        return torch.where(s >= 0, torch.ones_like(s), -torch.ones_like(s))

    @staticmethod
    def backward(ctx, g):
        return g


class _StepSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, s):
        return (s > 0).to(s.dtype)

    @staticmethod
    def backward(ctx, g):
        return g


def _key(name: str) -> str:
    return name.replace(".", "__")


def kaiming_score_bound(shape: tuple[int, ...]) -> float:
    """The bound of a layer's "kaiming" scores: 1/sqrt(fan_in), the edge-popup init
    (kaiming_uniform with a=√5: sqrt(6/fan_in)·(1/sqrt(3)))."""
    fan_in = int(math.prod(shape[1:])) if len(shape) > 1 else int(shape[0])
    return 1.0 / math.sqrt(max(1, fan_in))


class SupermaskNet(nn.Module):
    """Wrap ``model``; learn only a mask over its frozen, pruned weights."""

    def __init__(self, model: nn.Module, prune_mask: Mask, kind: str = "sign",
                 score_init: str = "kaiming", seed: int = 0, train_other: bool = False,
                 bernoulli_eval: str = "sample"):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"unknown supermask kind {kind!r}; choose one of {', '.join(KINDS)}")
        if score_init not in SCORE_INITS:
            raise ValueError(f"unknown score_init {score_init!r}; choose one of {', '.join(SCORE_INITS)}")
        if bernoulli_eval not in ("sample", "threshold"):
            raise ValueError("bernoulli_eval must be 'sample' or 'threshold'")
        prune_mask.check(model)
        self.model = model
        self.kind = kind
        self.bernoulli_eval = bernoulli_eval
        self.names = list(prune_mask.keys())
        for n, p in model.named_parameters():
            p.requires_grad_(bool(train_other) and n not in prune_mask)
        params = dict(model.named_parameters())
        g = torch.Generator().manual_seed(int(seed))
        self.scores = nn.ParameterDict()
        self._shapes: dict[str, tuple] = {}
        for i, n in enumerate(self.names):
            p = params[n]
            idx = torch.nonzero(prune_mask[n].reshape(-1).cpu()).reshape(-1)
            self.register_buffer(f"_idx{i}", idx, persistent=False)
            self.register_buffer(f"_w{i}", p.detach().reshape(-1)[idx].clone(), persistent=False)
            self._shapes[n] = tuple(p.shape)
            self.scores[_key(n)] = nn.Parameter(self._init_scores(score_init, p, idx, g))
        self.num_kept = int(sum(int(prune_mask[n].sum()) for n in self.names))
        self._sample_gen: torch.Generator | None = None

    @staticmethod
    def _init_scores(how: str, p: torch.Tensor, idx: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        k = idx.numel()
        if how == "ones":
            return torch.ones(k)
        if how == "uniform":
            return torch.rand(k, generator=g) * 2 - 1
        if how == "normal":
            return torch.randn(k, generator=g)
        return (torch.rand(k, generator=g) * 2 - 1) * kaiming_score_bound(tuple(p.shape))

    # ---- mask functions ------------------------------------------------------------------------
    def _m(self, s: torch.Tensor) -> torch.Tensor:
        if self.kind == "sign":
            return _SignSTE.apply(s)
        if self.kind == "binary":
            return _StepSTE.apply(s)
        p = torch.sigmoid(s)
        if self.training or self.bernoulli_eval == "sample":
            sample = torch.bernoulli(p.detach(), generator=self._sample_gen)
        else:
            sample = (p.detach() > 0.5).to(p.dtype)
        return sample + p - p.detach()

    def set_sample_seed(self, seed: int | None) -> None:
        """Seed the Bernoulli sampler (None: torch's global RNG)."""
        self._sample_gen = None if seed is None else torch.Generator().manual_seed(int(seed))

    def effective_weights(self) -> dict[str, torch.Tensor]:
        out = {}
        for i, n in enumerate(self.names):
            idx = getattr(self, f"_idx{i}")
            w = getattr(self, f"_w{i}")
            vals = w * self._m(self.scores[_key(n)]).to(w.dtype)
            full = torch.zeros(math.prod(self._shapes[n]), dtype=w.dtype, device=w.device)
            out[n] = full.index_put((idx,), vals).reshape(self._shapes[n])
        return out

    def forward(self, *args, **kwargs):
        return functional_call(self.model, self.effective_weights(), args, kwargs, strict=False)

    # ---- flat views (what goes on the wire) -----------------------------------------------------
    def score_vector(self) -> torch.Tensor:
        if not self.names:
            return torch.zeros(0)
        return torch.cat([self.scores[_key(n)].detach().reshape(-1).cpu() for n in self.names])

    @torch.no_grad()
    def load_score_vector(self, v: torch.Tensor) -> None:
        v = torch.as_tensor(v).reshape(-1)
        if v.numel() != self.num_kept:
            raise ValueError(f"score vector has {v.numel()} entries, expected {self.num_kept}")
        off = 0
        for n in self.names:
            s = self.scores[_key(n)]
            s.copy_(v[off:off + s.numel()].to(s.dtype))
            off += s.numel()

    @torch.no_grad()
    def mask_values(self) -> torch.Tensor:
        return torch.cat([self._m(self.scores[_key(n)]).detach().cpu() for n in self.names]) \
            if self.names else torch.zeros(0)

    @torch.no_grad()
    def mask_bits(self) -> torch.Tensor:
        """One bool per kept weight: sign -> score >= 0, binary -> score > 0, bernoulli -> a sample."""
        s = self.score_vector()
        if self.kind == "sign":
            return s >= 0
        if self.kind == "binary":
            return s > 0
        return torch.bernoulli(torch.sigmoid(s), generator=self._sample_gen) > 0.5

    @torch.no_grad()
    def probabilities(self) -> torch.Tensor:
        """sigmoid(score) per kept weight (the Bernoulli parameters for ``bernoulli``)."""
        return torch.sigmoid(self.score_vector())

    @torch.no_grad()
    def load_mask_bits(self, bits: torch.Tensor, magnitude: float | None = None) -> None:
        """Set scores so that ``mask_bits()`` equals ``bits`` (sign / binary kinds).

        Keeps each score's magnitude (its local confidence) unless ``magnitude`` is given; zero
        scores get a small positive magnitude so the bit is unambiguous.
        """
        if self.kind == "bernoulli":
            raise ValueError("load_mask_bits is for sign/binary supermasks; set bernoulli "
                             "probabilities with load_probabilities")
        bits = torch.as_tensor(bits).reshape(-1).bool()
        if bits.numel() != self.num_kept:
            raise ValueError(f"got {bits.numel()} mask bits, expected {self.num_kept}")
        s = self.score_vector()
        mag = s.abs() if magnitude is None else torch.full_like(s, float(magnitude))
        mag = torch.where(mag > 0, mag, torch.full_like(mag, 1e-6))
        self.load_score_vector(torch.where(bits, mag, -mag))

    @torch.no_grad()
    def load_probabilities(self, p: torch.Tensor, eps: float = 1e-4) -> None:
        p = torch.as_tensor(p, dtype=torch.float32).reshape(-1).clamp(eps, 1 - eps)
        self.load_score_vector(torch.log(p) - torch.log1p(-p))

    @torch.no_grad()
    def effective_state_dict(self) -> dict[str, torch.Tensor]:
        """The wrapped model's state_dict with masked weights: loadable into a plain model."""
        sd = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        for n, w in self.effective_weights().items():
            sd[n] = w.detach().clone()
        return sd
