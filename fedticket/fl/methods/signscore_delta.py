"""SignScore's delta vote (``signscore.uplink_vote: delta``): a client says how far it moved
each score, not which sign it ended on.

Why (issue 10, target 1): the sign vote reports the sign a client's *own* scores end on, and
those scores start from its own magnitudes, ~10 rounds stale (10 of 100 clients a round). The
server's average is then an average of the clients' standing preferences, not of what this
round's training on the current global wanted; an entry one client needs flipped is outvoted by
nine that never looked at it (they vote for the sign they were sent, with probability
sigmoid(2·|s|/m) ≈ 0.88 on average). The delta vote is FedAvg over the score *changes*:

* **client** — Δ = (its scores after local training) − (its scores when it loaded the global),
  clipped per layer to ±B, B = ``delta_clip`` × std(Δ) of that layer (0: max |Δ|); it sends the
  stochastic ternary rounding t = sign(Δ)·[u < |Δ|/B] (TernGrad, Wen et al. 2017), so
  E[B·t] = Δ (clipped) and a score the client did not move costs ~nothing: most t are 0.
* **wire** (``fedticket.tern``) — the L per-layer B as float32, then the nonzero pattern
  range-coded with the dither model (``u`` regenerated from the seed in the payload; an entry is
  nonzero exactly when its ``u`` is below its rate, so nonzeros crowd into small ``u``), then the
  nonzeros' signs range-coded against the global signs at those places (moves toward the sent
  sign and against it are not equally likely). Exact decode; every byte counted.
* **server** — one float per kept weight S, in the clients' score units (starts at
  ``delta_init`` × the layer's kaiming bound, sign +1 = the ticket), moved by the example-weighted
  mean of the decoded B·t: v = momentum·v + mean, S += ``delta_lr``·v; the global is sign(S). An
  accumulator, not an EMA: S forgets nothing, like a centrally trained score.
"""

from __future__ import annotations

import struct

import torch
from flwr.app import Array

from fedticket.core import entropy
from fedticket.fl import wire

TERNARY = "fedticket.tern"
_HEAD = struct.Struct("<2sB")          # magic, layers; then layers x float32 scale, 2 parts
_MAGIC = b"ST"


def ternary_scales(delta: torch.Tensor, segments: list[int], clip: float) -> torch.Tensor:
    """Per layer, the clip bound B of its changes: ``clip`` × std (0: max |Δ|); never 0."""
    out = []
    for d in torch.split(delta.reshape(-1).double(), list(segments)):
        if d.numel() == 0:
            out.append(1.0)
            continue
        b = float(d.abs().max()) if clip <= 0 else clip * float(d.pow(2).mean().sqrt())
        out.append(b if b > 0 else 1.0)
    return torch.tensor(out, dtype=torch.float64)


def ternary_round(delta: torch.Tensor, segments: list[int], clip: float, u: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """(t in {−1, 0, 1} as int8, per-layer B): t = sign(Δ)·[u < min(|Δ|/B, 1)], so E[B·t] is Δ
    clipped to ±B; ``u`` are the uniforms (one per entry) the receiver regenerates."""
    d = delta.reshape(-1).double()
    scales = ternary_scales(d, segments, clip)
    per_entry = torch.repeat_interleave(scales, torch.tensor(list(segments)))
    rate = (d.abs() / per_entry).clamp(max=1.0)
    nonzero = u.reshape(-1).double() < rate
    t = torch.where(nonzero, torch.sign(d), torch.zeros_like(d)).to(torch.int8)
    return t, scales


def encode_ternary(t: torch.Tensor, scales: torch.Tensor, seed: int, reference: torch.Tensor
                   ) -> Array:
    """The ``fedticket.tern`` payload of ternary votes ``t`` drawn with :func:`entropy.dither`
    (``seed``) and per-layer ``scales``; signs coded against the global signs ``reference``."""
    t = t.reshape(-1)
    ref = reference.reshape(-1).bool()
    nonzero = t != 0
    parts = [entropy.encode_delta(nonzero, torch.zeros_like(nonzero), dither_seed=seed),
             entropy.encode_delta((t[nonzero] > 0), ref[nonzero])]
    blob = _HEAD.pack(_MAGIC, scales.numel()) + scales.numpy().astype("<f4").tobytes()
    for p in parts:
        blob += struct.pack("<I", len(p)) + p
    return wire.raw_array(blob, TERNARY)


def decode_ternary(array, segments: list[int], reference: torch.Tensor) -> torch.Tensor:
    """The decoded changes B·t (float32, one per kept weight) of a ``fedticket.tern`` payload,
    or :class:`wire.MalformedPayload` naming what is wrong."""
    data = wire.raw_bytes(array, TERNARY)
    if len(data) < _HEAD.size:
        raise wire.MalformedPayload("ternary payload shorter than its header")
    magic, layers = _HEAD.unpack_from(data)
    if magic != _MAGIC or layers != len(segments):
        raise wire.MalformedPayload(f"ternary payload: bad magic {magic!r} or {layers} layers "
                                    f"(expected {len(segments)})")
    off = _HEAD.size + 4 * layers
    if len(data) < off:
        raise wire.MalformedPayload("ternary payload truncated in its scales")
    scales = torch.frombuffer(bytearray(data[_HEAD.size:off]), dtype=torch.float32).double()
    if not bool(torch.isfinite(scales).all()) or bool((scales <= 0).any()):
        raise wire.MalformedPayload("ternary payload has a scale that is not finite and > 0")
    parts = wire.length_prefixed_parts(data, off, 2, "ternary payload")
    n = int(sum(segments))
    ref = reference.reshape(-1).bool()
    try:
        nonzero = entropy.decode_delta(parts[0], torch.zeros(n, dtype=torch.bool), expected_n=n)
        up = entropy.decode_delta(parts[1], ref[nonzero])
    except ValueError as e:
        raise wire.MalformedPayload(f"ternary payload: {e}") from None
    t = torch.zeros(n, dtype=torch.float64)
    t[nonzero] = torch.where(up, 1.0, -1.0).double()
    per_entry = torch.repeat_interleave(scales, torch.tensor(list(segments)))
    return (t * per_entry).float()


def initial_score(bounds: torch.Tensor, init: float) -> torch.Tensor:
    """The server's starting S: ``init`` × each entry's layer kaiming bound, sign +1."""
    return (bounds.double() * float(init)).float()


def delta_step(score: torch.Tensor, velocity: torch.Tensor, updates: list[torch.Tensor],
               weights: list[float], lr: float, momentum: float
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """S += lr·(momentum·v + example-weighted mean of the decoded changes); (S, v)."""
    total = float(sum(weights))
    g = torch.zeros_like(score, dtype=torch.float64)
    for u, w in zip(updates, weights, strict=True):
        g += u.reshape(-1).double() * (float(w) / total)
    velocity = momentum * velocity.double() + g
    return (score.double() + lr * velocity).float(), velocity.float()
