"""SignCare: SignScore whose clients abstain where they do not care (``method=signscore-care``).

Why (issue 12, docs/fl.md "Federated graph tickets"): a SignScore client votes on every kept
weight with a ±1 bit whose expectation tanh(s/(T·m)) is bounded by 1, and a client whose data
does not need a weight keeps voting for its current sign. On label-skewed parts (METIS parts of
Cora) the nine parts that do not need a sign flipped then outvote the one that does, while
FedAvg averages gradients, whose size says how much each client cares. Here a client votes only
on the ``signcare.keep`` fraction of its kept weights it cares most about (the largest
accumulated score gradient |Σ_t g_t| over its local steps, ``care=grad``, or the largest local
score change, ``care=move``) and abstains on the rest; the server's mean vote counts an
abstention as 0, so a weight nobody cares about keeps its sign while its score decays, and the
one part that needs it flipped can flip it.

Uplink (``fedticket.tvotes``): the abstention mask range-coded against all-abstain plus the
voted signs range-coded against the global signs the client was sent (both by
``fedticket.core.entropy``), about ``n·H(keep) + keep·n·H(flip)`` bits: at keep = 0.05,
~0.3 bit per kept weight.

``vote=soft`` is a diagnostic, not a compressor: each client sends its exact soft sign
tanh(s/(T·m)) (SignScore's vote expectation, float32), so the server moves its score by the
noise-free mean vote. Comparing it with signscore tells whether the 1-bit draw or the vote's
own rule costs the accuracy.

Server: the SignScore score and step (``signscore.server_lr``, ``server_momentum``,
``score_clip``) on the mean vote d: ``server=toward`` moves the score toward d (SignScore's
step); ``server=accumulate`` adds d to it (a sparse signSGD: votes sum over rounds).
"""

from __future__ import annotations

import struct

import torch
from flwr.app import Array

from fedticket.core import entropy
from fedticket.errors import ConfigError
from fedticket.fl import wire
from fedticket.fl.methods.signscore import (
    SignScoreLearner,
    SignScoreMethod,
    anneal,
    step_toward,
    vote_scale,
)

TVOTES = "fedticket.tvotes"   # ternary votes: abstention mask + voted signs, both range-coded
_HEAD = struct.Struct("<2sI")   # magic, length of the coded mask (then the coded signs)
_MAGIC = b"TV"


def care_top(care: torch.Tensor, keep: float) -> torch.Tensor:
    """The bool mask of the ``round(keep·n)`` (at least 1) entries of largest ``care``."""
    care = care.reshape(-1)
    k = min(care.numel(), max(1, round(float(keep) * care.numel())))
    out = torch.zeros(care.numel(), dtype=torch.bool)
    if care.numel():
        out[torch.topk(care.double(), k, sorted=False).indices] = True
    return out


def encode_ternary(voted: torch.Tensor, signs: torch.Tensor, reference: torch.Tensor) -> bytes:
    """``voted`` (bool, who votes) + ``signs`` (bool, of every entry; only the voted travel),
    coded against all-abstain and against ``reference``'s voted entries."""
    voted, signs, ref = (t.reshape(-1).bool() for t in (voted, signs, reference))
    mask = entropy.encode_delta(voted, torch.zeros_like(voted))
    body = entropy.encode_delta(signs[voted], ref[voted])
    return _HEAD.pack(_MAGIC, len(mask)) + mask + body


def decode_ternary(data: bytes, n: int, reference: torch.Tensor) -> torch.Tensor:
    """The float votes (+1 / −1 / 0 = abstain) of an :func:`encode_ternary` payload;
    MalformedPayload when it does not decode to ``n`` entries."""
    if len(data) < _HEAD.size:
        raise wire.MalformedPayload("ternary vote payload shorter than its header")
    magic, m = _HEAD.unpack_from(data)
    if magic != _MAGIC or _HEAD.size + m > len(data):
        raise wire.MalformedPayload(f"ternary vote payload: bad magic {magic!r} or mask length {m}")
    ref = reference.reshape(-1).bool()
    try:
        voted = entropy.decode_delta(data[_HEAD.size:_HEAD.size + m],
                                     torch.zeros(n, dtype=torch.bool), expected_n=n)
        signs = entropy.decode_delta(data[_HEAD.size + m:], ref[voted],
                                     expected_n=int(voted.sum()))
    except ValueError as e:
        raise wire.MalformedPayload(f"ternary vote payload: {e}") from None
    votes = torch.zeros(n, dtype=torch.float64)
    votes[voted] = signs.double() * 2 - 1
    return votes


class _Hooks:
    def __init__(self, handles):
        self.handles = handles

    def remove(self):
        for h in self.handles:
            h.remove()


class SignCareLearner(SignScoreLearner):
    """SignScore's client; votes on the weights it cares about, abstains on the rest."""

    _loaded: torch.Tensor | None = None
    _grad: list[torch.Tensor] | None = None

    def load_global(self, array) -> None:
        super().load_global(array)
        self._loaded = self.net.score_vector().clone()

    def _hook(self, opt):
        # the score gradient summed over the local steps: how much this client's loss wants a
        # weight moved (Adam's step hides its size: every score moves by about lr)
        params = [self.net.scores[k] for k in self.net.scores.keys()]
        self._grad = [torch.zeros_like(p, dtype=torch.float64) for p in params]

        def acc(buf):
            def hook(g):
                buf.add_(g.detach().double())   # returns None: the gradient itself is unchanged
            return hook

        return _Hooks([p.register_hook(acc(b)) for p, b in zip(params, self._grad, strict=True)])

    def care(self) -> torch.Tensor:
        if self.cfg.signcare.care == "move":
            return (self.net.score_vector() - self._loaded).abs()
        if not self._grad:
            return torch.zeros(self.net.num_kept, dtype=torch.float64)
        return torch.cat([g.reshape(-1) for g in self._grad]).abs()

    def update(self, server_round):
        sc, s = self.cfg.signscore, self.net.score_vector()
        if self.cfg.signcare.vote == "soft":
            t = anneal(sc.temperature, sc.temperature_final, server_round, self.cfg.rounds)
            return wire.floats_array(torch.tanh(s.double() / (t * vote_scale(s))))
        voted = care_top(self.care(), self.cfg.signcare.keep)
        return wire.raw_array(encode_ternary(voted, s >= 0, self._global), TVOTES)


class SignCareMethod(SignScoreMethod):
    """SignScore's server score moved by the mean of ternary (abstaining) or soft votes."""

    name = "signscore-care"

    def __init__(self, cfg, ticket):
        if cfg.server.secure_aggregation:
            raise ConfigError("method=signscore-care sends range-coded ternary votes, which "
                              "secure aggregation cannot sum; use method=signscore")
        super().__init__(cfg, ticket)

    @property
    def uplink_kind(self) -> str:
        return wire.F32 if self.cfg.signcare.vote == "soft" else TVOTES

    def decode_update(self, array):
        if self.cfg.signcare.vote == "soft":
            return wire.decode_floats_array(array, self.ticket.kept).double()
        if self._sent is None:
            raise wire.MalformedPayload("ternary votes, but no global signs were broadcast")
        if not isinstance(array, Array) or array.stype != TVOTES:
            raise wire.MalformedPayload(f"payload kind {getattr(array, 'stype', None)!r}, "
                                        f"expected {TVOTES!r}")
        return decode_ternary(bytes(array.data), self.ticket.kept, self._sent)

    def aggregate(self, server_round, updates, weights, current):
        if self._score is None:  # a resumed server: only the signs survived
            margin = float(self.cfg.signscore.init_margin)
            self._score = torch.where(self._signs(current), margin, -margin).float()
            self._velocity = torch.zeros(self.ticket.kept)
        if updates:
            sc = self.cfg.signscore
            total = float(sum(weights))
            d = sum(v.reshape(-1).double() * (float(w) / total)
                    for v, w in zip(updates, weights, strict=True))
            lr = anneal(sc.server_lr, sc.server_lr_final, server_round, self.cfg.rounds)
            if self.cfg.signcare.server == "toward":
                self._score, self._velocity = step_toward(
                    self._score, self._velocity, d, lr, sc.server_momentum, clip=sc.score_clip)
            else:
                v = sc.server_momentum * self._velocity.double() + d
                new = self._score.double() + lr * v
                if sc.score_clip > 0:
                    new = new.clamp(-sc.score_clip, sc.score_clip)
                self._score, self._velocity = new.float(), v.float()
        return self._global(self._score >= 0)

    def learner(self, partition_id, local_state=None):
        return SignCareLearner(self.cfg, self.ticket, partition_id, local_state, kind=self.kind)
