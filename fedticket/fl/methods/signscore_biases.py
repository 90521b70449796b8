"""SignScore's trained biases (``signscore.train_biases``): the parameters no mask covers.

Why (issue 10, target 1): a sign mask over frozen weights keeps the biases at their initial
zeros. Centrally, on the bench's LeNet-300-100 ticket, training them beside the scores lifts the
ceiling from 0.8499 to 0.8553 (docs/fl.md, "The ceiling"), and FedAvg-subnet, the baseline the
sign mask must match, trains them. They are few (410 on LeNet-300-100 against 26,6xx kept
weights), so they cost little on the wire if coded:

* **client** — trains them with its scores (SGD at ``signscore.bias_lr``, default
  ``train.weight_lr``, on the same cosine as the scores' lr) and sends their change this round
  as the delta vote sends score changes: the stochastic ternary rounding with per-tensor scale
  B = max |change| (no clipping, so E[B·t] is the change itself), range-coded (``fedticket.tern``,
  its signs coded against nothing: a bias has no sign to agree with).
* **server** — b += the example-weighted mean of the decoded changes (FedAvg on the biases),
  kept in float32 and checkpointed with the score.
* **downlink** — b quantized per tensor to int8 (scale max |b| / 127): what every client starts
  from and what the server evaluates, so both sides use the same numbers; the server's float b
  absorbs the rounding, it does not drift.
* **wire** — ``fedticket.withb``: the payload the method would send without biases (its kind
  and bytes, unchanged) followed by the bias part, each length-prefixed.
"""

from __future__ import annotations

import struct

import torch
from flwr.app import Array
from torch import nn

from fedticket.core import entropy
from fedticket.fl import wire
from fedticket.fl.methods import signscore_delta as delta_vote

WITH_BIASES = "fedticket.withb"
_HEAD = struct.Struct("<2sB")     # magic, length of the inner payload's kind
_MAGIC = b"WB"
_QHEAD = struct.Struct("<2sH")    # magic, tensors; then float32 scales, then int8 values
_QMAGIC = b"BQ"


def free_parameters(model: nn.Module, mask) -> list[tuple[str, nn.Parameter]]:
    """The parameters of ``model`` no mask covers (biases, norm scales), in module order."""
    return [(n, p) for n, p in model.named_parameters() if n not in mask]


def sizes(params) -> list[int]:
    return [int(p.numel()) for _, p in params]


def vector(params) -> torch.Tensor:
    """The free parameters as one float32 vector (the wire's order)."""
    if not params:
        return torch.zeros(0)
    return torch.cat([p.detach().reshape(-1).float().cpu() for _, p in params])


@torch.no_grad()
def load_vector(params, v: torch.Tensor) -> None:
    v = v.reshape(-1)
    if v.numel() != sum(sizes(params)):
        raise ValueError(f"bias vector has {v.numel()} entries, expected {sum(sizes(params))}")
    off = 0
    for _, p in params:
        p.copy_(v[off:off + p.numel()].reshape(p.shape).to(p.dtype))
        off += p.numel()


# ---- the container ------------------------------------------------------------------------------
def attach(inner: Array, part: bytes) -> Array:
    """``inner`` (any raw payload) + the bias ``part``, as one ``fedticket.withb`` payload."""
    kind = str(inner.stype).encode("ascii")
    data = bytes(inner.data)
    blob = (_HEAD.pack(_MAGIC, len(kind)) + kind + struct.pack("<I", len(data)) + data
            + struct.pack("<I", len(part)) + bytes(part))
    return wire.raw_array(blob, WITH_BIASES)


def detach(array) -> tuple[Array, bytes]:
    """(the inner payload, the bias part) of a ``fedticket.withb`` payload, or MalformedPayload."""
    data = wire.raw_bytes(array, WITH_BIASES)
    if len(data) < _HEAD.size:
        raise wire.MalformedPayload("payload with biases shorter than its header")
    magic, k = _HEAD.unpack_from(data)
    if magic != _MAGIC or len(data) < _HEAD.size + k:
        raise wire.MalformedPayload(f"payload with biases: bad magic {magic!r} or truncated kind")
    try:
        kind = data[_HEAD.size:_HEAD.size + k].decode("ascii")
    except UnicodeDecodeError:
        raise wire.MalformedPayload("payload with biases: its inner kind is not ASCII") from None
    inner, part = wire.length_prefixed_parts(data, _HEAD.size + k, 2, "payload with biases")
    return wire.raw_array(inner, kind), part


def has_biases(array) -> bool:
    return getattr(array, "stype", None) == WITH_BIASES


# ---- downlink: int8 per tensor ------------------------------------------------------------------
def quantize(b: torch.Tensor, segments: list[int]) -> bytes:
    """``b`` as per-tensor int8 (scale max |b| / 127, 1 when the tensor is all zeros)."""
    b = b.reshape(-1).double()
    scales, values = [], []
    for blk in torch.split(b, list(segments)):
        m = float(blk.abs().max()) if blk.numel() else 0.0
        s = m / 127.0 if m > 0 else 1.0
        scales.append(s)
        values.append(torch.round(blk / s).clamp(-127, 127).to(torch.int8))
    vals = torch.cat(values) if values else torch.zeros(0, dtype=torch.int8)
    return (_QHEAD.pack(_QMAGIC, len(segments))
            + torch.tensor(scales, dtype=torch.float32).numpy().astype("<f4").tobytes()
            + vals.numpy().tobytes())


def dequantize(part: bytes, segments: list[int]) -> torch.Tensor:
    """The float32 biases of a :func:`quantize` part, or MalformedPayload."""
    n, k = int(sum(segments)), len(segments)
    if len(part) != _QHEAD.size + 4 * k + n:
        raise wire.MalformedPayload(f"bias part has {len(part)} bytes, expected "
                                    f"{_QHEAD.size + 4 * k + n} ({k} tensors, {n} biases)")
    magic, count = _QHEAD.unpack_from(part)
    if magic != _QMAGIC or count != k:
        raise wire.MalformedPayload(f"bias part: bad magic {magic!r} or {count} tensors "
                                    f"(expected {k})")
    off = _QHEAD.size
    scales = torch.frombuffer(bytearray(part[off:off + 4 * k]), dtype=torch.float32).double()
    if k and (not bool(torch.isfinite(scales).all()) or bool((scales <= 0).any())):
        raise wire.MalformedPayload("bias part has a scale that is not finite and > 0")
    vals = torch.frombuffer(bytearray(part[off + 4 * k:]), dtype=torch.int8).double()
    per_entry = torch.repeat_interleave(scales, torch.tensor(list(segments), dtype=torch.long))
    return (vals * per_entry).float()


# ---- uplink: the change, ternary ----------------------------------------------------------------
def encode_change(change: torch.Tensor, segments: list[int], seed: int) -> bytes:
    """The ternary rounding of this round's bias ``change`` (per-tensor B = max |change|)."""
    n = int(sum(segments))
    t, scales = delta_vote.ternary_round(change, segments, 0.0, entropy.dither(seed, n))
    return bytes(delta_vote.encode_ternary(t, scales, seed, torch.zeros(n, dtype=torch.bool)).data)


def decode_change(part: bytes, segments: list[int]) -> torch.Tensor:
    """The decoded change B·t of an :func:`encode_change` part, or MalformedPayload."""
    n = int(sum(segments))
    return delta_vote.decode_ternary(wire.raw_array(part, delta_vote.TERNARY), segments,
                                     torch.zeros(n, dtype=torch.bool))
