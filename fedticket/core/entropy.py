"""Below one bit per entry: a bit vector range-coded against a reference both sides hold.

A sign or mask vector that moves slowly (a client's signs against the global signs it was just
sent; the global signs against the ticket's, which every client has from its setup) differs from
its reference in few places. :func:`encode_delta` codes ``bits XOR reference`` with one
Bernoulli(p) model whose probability is measured by the encoder (two passes) and travels in the
header, so the cost is about ``n·H(p)`` bits instead of ``n``; :func:`decode_delta` is exact.

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
_FLAG_NONE, _FLAG_ALL = 1, 2             # no flip / every entry flipped: no body
_Q = 1 << 16


def _model(q: int):
    import constriction  # only the coded path needs it

    return constriction.stream.model.Bernoulli(q / _Q, perfect=False)


def _as_bool(x: torch.Tensor | np.ndarray, what: str) -> np.ndarray:
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if arr.dtype != np.bool_:
        raise ValueError(f"{what} must be a bool vector, got dtype {arr.dtype}")
    return arr.reshape(-1)


def encode_delta(bits, reference) -> bytes:
    """``bits`` coded against ``reference`` (same length, bool); decode with :func:`decode_delta`."""
    b, ref = _as_bool(bits, "bits"), _as_bool(reference, "reference")
    if b.size != ref.size:
        raise ValueError(f"bits have {b.size} entries, the reference {ref.size}")
    delta = b ^ ref
    n, ones = int(delta.size), int(delta.sum())
    crc = zlib.crc32(pack_bits(delta))
    if ones == 0 or ones == n:
        flags = _FLAG_NONE if ones == 0 else _FLAG_ALL
        return pack_header(MAGIC, n, flags) + _EXTRA.pack(0, crc)
    q = min(max(round(ones / n * _Q), 1), _Q - 1)
    return pack_header(MAGIC, n, 0) + _EXTRA.pack(q, crc) + _range_code(delta, q)


def _range_code(delta: np.ndarray, q: int) -> bytes:
    import constriction

    enc = constriction.stream.queue.RangeEncoder()
    enc.encode(delta.astype(np.int32), _model(q))
    return np.asarray(enc.get_compressed(), dtype="<u4").tobytes()


def decode_delta(payload: bytes, reference, expected_n: int | None = None) -> torch.Tensor:
    """Inverse of :func:`encode_delta`: the flat bool vector; ValueError naming what is wrong."""
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
    if flags & ~(_FLAG_NONE | _FLAG_ALL) or flags == (_FLAG_NONE | _FLAG_ALL):
        raise ValueError(f"coded-bit payload has unknown flags {flags:#x}")
    if flags:
        if body:
            raise ValueError(f"coded-bit payload has {len(body)} body bytes where none belong")
        delta = np.full(n, bool(flags & _FLAG_ALL))
    else:
        if not 0 < q < _Q:
            raise ValueError(f"coded-bit payload has probability {q}/65536 outside (0, 1)")
        if len(body) % 4 or not body:
            raise ValueError(f"coded-bit payload body has {len(body)} bytes, not a whole number "
                             "of 4-byte words")
        words = np.frombuffer(body, dtype="<u4").astype(np.uint32)
        try:
            import constriction

            dec = constriction.stream.queue.RangeDecoder(words)
            delta = np.asarray(dec.decode(_model(q), n)).astype(bool)
        except Exception as e:  # constriction reports a bad stream with its own error types
            raise ValueError(f"coded-bit payload is corrupt (range decoder: {e})") from None
        # a range decoder ignores trailing words and accepts many streams: only the one
        # canonical encoding of what it decoded is a well-formed payload
        if _range_code(delta, q) != body:
            raise ValueError("coded-bit payload is corrupt (its body is not the encoding of "
                             "the bits it decodes to)")
    if zlib.crc32(pack_bits(delta)) != crc:
        raise ValueError("coded-bit payload is corrupt (CRC-32 of the decoded bits does not match)")
    return torch.from_numpy(delta ^ ref)


def coded_size(bits, reference) -> int:
    """Bytes of :func:`encode_delta`'s payload (what the coded path would send)."""
    return len(encode_delta(bits, reference))
