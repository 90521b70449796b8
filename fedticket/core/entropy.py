"""Below one bit per entry: a bit vector range-coded against a reference both sides hold.

A sign or mask vector that moves slowly (a client's signs against the global signs it was just
sent; the global signs against the ticket's, which every client has from its setup) differs from
its reference in few places. :func:`encode_delta` codes ``bits XOR reference`` with one
Bernoulli(p) model whose probability is measured by the encoder (two passes) and travels in the
header, so the cost is about ``n·H(p)`` bits instead of ``n``; :func:`decode_delta` is exact.

**Dithered (stochastic) bits.** A stochastic sign is ``bit = u < p`` for a uniform ``u``. When
``u`` comes from a seed the payload carries (:func:`dither`), the receiver regenerates it, and a
flip against the reference becomes predictable from ``u`` alone: with ``c = u`` where the
reference bit is 0 and ``1 - u`` where it is 1, a flip happens exactly when ``c`` is below the
entry's flip probability, so flips crowd into small ``c``. :func:`encode_delta` with
``dither_seed`` codes each entry with the flip frequency of its ``c``-bin (``bins`` uint16
probabilities in the header): the cost is about H(flip | c) instead of H(flip). The bits are the
same; only the model knows more.

Payload: core's 8-byte header (magic ``FE``, version, flags, entry count) + ``p`` as uint16 (q/65536)
+ the CRC-32 of the packed decoded delta + the range coder's uint32 words (constriction's
``RangeEncoder``, a well-kept coder). Flags mark the all-equal and all-flipped cases, which carry
no body. The CRC lets a receiver refuse a damaged body instead of acting on a wrong decode (a
range decoder turns any bytes into *some* symbols).
"""

from __future__ import annotations

import struct
import zlib

import numpy as np
import torch

from fedticket.core.codec import HEADER_BYTES, pack_bits, pack_header, read_header

MAGIC = b"FE"
_EXTRA = struct.Struct("<HI")            # quantized p, crc32 of the packed delta
EXTRA_BYTES = _EXTRA.size
_DITHER = struct.Struct("<QB")          # dither seed, number of c-bins (then bins x uint16)
_FLAG_NONE, _FLAG_ALL, _FLAG_DITHER = 1, 2, 4   # no flip / every entry flipped: no body
_FLAG_CONTEXT = 8                       # one p per context class (classes given by both sides)
_CONTEXTS = struct.Struct("<H")         # number of context classes (then classes x uint16)
MAX_CONTEXTS = 4096
_Q = 1 << 16
DEFAULT_BINS = 32


def dither(seed: int, n: int) -> torch.Tensor:
    """The ``n`` uniforms of ``seed`` (float64): what a stochastic sign compares against."""
    return torch.rand(n, generator=torch.Generator().manual_seed(int(seed)), dtype=torch.float64)


def _bin_of(seed: int, ref: np.ndarray, bins: int) -> np.ndarray:
    u = dither(seed, ref.size).numpy()
    c = np.where(ref, 1.0 - u, u)
    return np.minimum((c * bins).astype(np.int64), bins - 1)


def _as_bool(x: torch.Tensor | np.ndarray, what: str) -> np.ndarray:
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if arr.dtype != np.bool_:
        raise ValueError(f"{what} must be a bool vector, got dtype {arr.dtype}")
    return arr.reshape(-1)


def _as_context(context, n: int) -> tuple[np.ndarray, int]:
    ctx = np.asarray(context.numpy() if isinstance(context, torch.Tensor) else context).reshape(-1)
    if ctx.size != n or ctx.dtype.kind not in "iu":
        raise ValueError(f"context must be {n} integer class ids, got {ctx.size} of {ctx.dtype}")
    k = int(ctx.max()) + 1 if n else 1
    if n and (int(ctx.min()) < 0 or k > MAX_CONTEXTS):
        raise ValueError(f"context class ids must be in [0, {MAX_CONTEXTS})")
    return ctx.astype(np.int64), k


def encode_delta(bits, reference, dither_seed: int | None = None,
                 bins: int = DEFAULT_BINS, context=None) -> bytes:
    """``bits`` coded against ``reference`` (same length, bool); decode with :func:`decode_delta`.

    ``dither_seed``: the bits were drawn as ``dither(dither_seed, n) < p``; the coder then models
    each flip by its dither bin (see the module docstring). ``context``: one integer class per
    entry that the receiver can compute too (a layer, whether the reference differs from the
    ticket); the coder then measures one flip frequency per class (``uint16`` each in the
    header), so the cost falls from H(flip) to H(flip | class). Any bits decode exactly.
    """
    b, ref = _as_bool(bits, "bits"), _as_bool(reference, "reference")
    if b.size != ref.size:
        raise ValueError(f"bits have {b.size} entries, the reference {ref.size}")
    delta = b ^ ref
    n, ones = int(delta.size), int(delta.sum())
    crc = zlib.crc32(pack_bits(delta))
    if context is not None and dither_seed is not None:
        raise ValueError("give a dither seed or a context, not both")
    if context is not None and 0 < ones < n:
        ctx, k = _as_context(context, n)
        count = np.bincount(ctx, minlength=k)
        flips = np.bincount(ctx, weights=delta, minlength=k)
        q = np.clip(np.round(flips / np.maximum(count, 1) * _Q), 1, _Q - 1).astype("<u2")
        head = (pack_header(MAGIC, n, _FLAG_CONTEXT) + _EXTRA.pack(0, crc) + _CONTEXTS.pack(k)
                + q.tobytes())
        return head + _range_code(delta, q[ctx].astype(np.float64) / _Q)
    if dither_seed is not None and 0 < ones < n:
        if not 1 <= bins <= 255:
            raise ValueError(f"bins={bins} must be in [1, 255]")
        idx = _bin_of(dither_seed, ref, bins)
        count = np.bincount(idx, minlength=bins)
        flips = np.bincount(idx, weights=delta, minlength=bins)
        q = np.clip(np.round(flips / np.maximum(count, 1) * _Q), 1, _Q - 1).astype("<u2")
        head = (pack_header(MAGIC, n, _FLAG_DITHER) + _EXTRA.pack(0, crc)
                + _DITHER.pack(int(dither_seed) % (1 << 64), bins) + q.tobytes())
        return head + _range_code(delta, q[idx].astype(np.float64) / _Q)
    if ones == 0 or ones == n:
        flags = _FLAG_NONE if ones == 0 else _FLAG_ALL
        return pack_header(MAGIC, n, flags) + _EXTRA.pack(0, crc)
    q = min(max(round(ones / n * _Q), 1), _Q - 1)
    return pack_header(MAGIC, n, 0) + _EXTRA.pack(q, crc) + _range_code(delta, q / _Q)


def _range_code(delta: np.ndarray, p) -> bytes:
    """Range-code ``delta`` with Bernoulli(p): one p for all, or one per entry (an array)."""
    import constriction

    enc = constriction.stream.queue.RangeEncoder()
    model = constriction.stream.model.Bernoulli(perfect=False)
    probs = np.broadcast_to(np.asarray(p, dtype=np.float64), delta.shape).copy()
    enc.encode(delta.astype(np.int32), model, probs)
    return np.asarray(enc.get_compressed(), dtype="<u4").tobytes()


def _range_decode(body: bytes, p: np.ndarray) -> np.ndarray:
    import constriction

    words = np.frombuffer(body, dtype="<u4").astype(np.uint32)
    dec = constriction.stream.queue.RangeDecoder(words)
    return np.asarray(dec.decode(constriction.stream.model.Bernoulli(perfect=False), p)).astype(bool)


def _decode_canonical(body: bytes, p: np.ndarray) -> np.ndarray:
    """The bits ``body`` range-codes under the per-entry probabilities ``p``, or ValueError."""
    if len(body) % 4 or not body:
        raise ValueError(f"coded-bit payload body has {len(body)} bytes, not a whole number "
                         "of 4-byte words")
    try:
        delta = _range_decode(body, p)
    except Exception as e:  # constriction reports a bad stream with its own error types
        raise ValueError(f"coded-bit payload is corrupt (range decoder: {e})") from None
    # a range decoder ignores trailing words and accepts many streams: only the one
    # canonical encoding of what it decoded is a well-formed payload
    if _range_code(delta, p) != body:
        raise ValueError("coded-bit payload is corrupt (its body is not the encoding of "
                         "the bits it decodes to)")
    return delta


def decode_delta(payload: bytes, reference, expected_n: int | None = None,
                 context=None) -> torch.Tensor:
    """Inverse of :func:`encode_delta`: the flat bool vector; ValueError naming what is wrong.
    ``context``: the same classes the encoder was given (needed only by a context payload)."""
    ref = _as_bool(reference, "reference")
    flags, n, rest = read_header(bytes(payload), MAGIC, "coded-bit")
    if expected_n is not None and n != expected_n:
        raise ValueError(f"coded-bit payload carries {n} bits, expected {expected_n}")
    if n != ref.size:
        raise ValueError(f"coded-bit payload carries {n} bits, the reference {ref.size}")
    if len(rest) < EXTRA_BYTES:
        raise ValueError(f"coded-bit payload too short ({HEADER_BYTES + len(rest)} bytes) for "
                         f"its {HEADER_BYTES + EXTRA_BYTES}-byte header")
    q, crc = _EXTRA.unpack_from(rest)
    body = rest[EXTRA_BYTES:]
    if flags not in (0, _FLAG_NONE, _FLAG_ALL, _FLAG_DITHER, _FLAG_CONTEXT):
        raise ValueError(f"coded-bit payload has unknown flags {flags:#x}")
    if flags == _FLAG_CONTEXT:
        if context is None:
            raise ValueError("coded-bit payload uses a context model, but the receiver gave "
                             "no context classes")
        ctx, k = _as_context(context, n)
        if len(body) < _CONTEXTS.size:
            raise ValueError("coded-bit payload too short for its context header")
        (kk,) = _CONTEXTS.unpack_from(body)
        if not 1 <= kk <= MAX_CONTEXTS or k > kk or len(body) < _CONTEXTS.size + 2 * kk:
            raise ValueError(f"coded-bit payload has {kk} context classes, the receiver's "
                             f"context needs {k}, or it is too short for them")
        qs = np.frombuffer(body[_CONTEXTS.size:_CONTEXTS.size + 2 * kk], dtype="<u2")
        body = body[_CONTEXTS.size + 2 * kk:]
        if (qs == 0).any():
            raise ValueError("coded-bit payload has a class probability of 0")
        delta = _decode_canonical(body, qs[ctx].astype(np.float64) / _Q)
    elif flags == _FLAG_DITHER:
        if len(body) < _DITHER.size:
            raise ValueError("coded-bit payload too short for its dither header")
        seed, bins = _DITHER.unpack_from(body)
        if bins < 1 or len(body) < _DITHER.size + 2 * bins:
            raise ValueError(f"coded-bit payload too short for its {bins} bin probabilities")
        qs = np.frombuffer(body[_DITHER.size:_DITHER.size + 2 * bins], dtype="<u2")
        body = body[_DITHER.size + 2 * bins:]
        if ((qs == 0)).any():
            raise ValueError("coded-bit payload has a bin probability of 0")
        delta = _decode_canonical(body, qs[_bin_of(seed, ref, bins)].astype(np.float64) / _Q)
    elif flags:
        if body:
            raise ValueError(f"coded-bit payload has {len(body)} body bytes where none belong")
        delta = np.full(n, bool(flags & _FLAG_ALL))
    else:
        if not 0 < q < _Q:
            raise ValueError(f"coded-bit payload has probability {q}/65536 outside (0, 1)")
        delta = _decode_canonical(body, np.full(n, q / _Q))
    if zlib.crc32(pack_bits(delta)) != crc:
        raise ValueError("coded-bit payload is corrupt (CRC-32 of the decoded bits does not match)")
    return torch.from_numpy(delta ^ ref)


def coded_size(bits, reference) -> int:
    """Bytes of :func:`encode_delta`'s payload (what the coded path would send)."""
    return len(encode_delta(bits, reference))
