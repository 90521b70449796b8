"""What goes on the wire: bits are bits.

A 1-bit mask travels as packed bytes (``ceil(n/8)``), never as a float array. Every payload the
project sends starts with the one 8-byte header of this module (two magic bytes naming the kind,
version, flags, entry count: :func:`pack_header` / :func:`read_header`), so a receiver can reject a
payload of the wrong length or kind before touching it. ``encode_bits`` is that header + packed
bits; ``compress=True`` entropy-codes the packed bits with zlib, which pays off for skewed masks (a
binary mask at density 0.1 carries ~0.47 bits of entropy/entry).
"""

from __future__ import annotations

import math
import struct
import zlib

import numpy as np
import torch

MAGIC = b"FT"
VERSION = 1
_HEADER = struct.Struct("<2sBBI")  # magic, version, flags, nbits  -> 8 bytes
HEADER_BYTES = _HEADER.size
_FLAG_ZLIB = 1


def pack_header(magic: bytes, n: int, flags: int = 0) -> bytes:
    """The 8-byte header of every payload: ``magic`` (2 bytes), version, flags, entry count."""
    return _HEADER.pack(magic, VERSION, flags, int(n))


def read_header(payload: bytes, magic: bytes, what: str) -> tuple[int, int, bytes]:
    """(flags, entry count, body) of a payload of kind ``magic``; ValueError naming the problem."""
    if len(payload) < HEADER_BYTES:
        raise ValueError(f"{what} payload too short ({len(payload)} bytes) for its "
                         f"{HEADER_BYTES}-byte header")
    got, version, flags, n = _HEADER.unpack_from(payload)
    if got != magic or version != VERSION:
        raise ValueError(f"{what} payload has a foreign header (not a fedticket {what} payload)")
    return flags, n, payload[HEADER_BYTES:]


def packed_size(n: int) -> int:
    return (int(n) + 7) // 8


def pack_bits(bits: torch.Tensor | np.ndarray) -> bytes:
    """Bool tensor (any shape, flattened row-major) -> exactly ceil(n/8) bytes."""
    arr = bits.detach().cpu().numpy() if isinstance(bits, torch.Tensor) else np.asarray(bits)
    if arr.dtype != np.bool_:
        raise ValueError(f"pack_bits expects a bool tensor, got dtype {arr.dtype}")
    return np.packbits(arr.reshape(-1), bitorder="little").tobytes()


def unpack_bits(data: bytes | bytearray | memoryview | np.ndarray, n: int) -> torch.Tensor:
    """Bytes -> flat bool tensor of length ``n``; the byte count must be exactly ceil(n/8)."""
    buf = np.frombuffer(bytes(data), dtype=np.uint8) if not isinstance(data, np.ndarray) else data
    if buf.dtype != np.uint8:
        raise ValueError(f"packed bits must be uint8 bytes, got dtype {buf.dtype}")
    expected = packed_size(n)
    if buf.size != expected:
        raise ValueError(f"packed bits have {buf.size} bytes, expected {expected} for {n} bits")
    out = np.unpackbits(buf.reshape(-1), count=n, bitorder="little").astype(bool)
    # Padding bits beyond n must be zero: anything else means the sender packed another length.
    if n % 8 and buf.size and (int(buf[-1]) >> (n % 8)):
        raise ValueError("packed bits have non-zero padding: payload was packed for another length")
    return torch.from_numpy(out)


def encode_bits(bits: torch.Tensor, compress: bool = False) -> bytes:
    """Header + packed bits (optionally zlib-coded, only kept when it is actually smaller)."""
    n = int(bits.numel())
    body = pack_bits(bits)
    flags = 0
    if compress:
        z = zlib.compress(body, 9)
        if len(z) < len(body):
            body, flags = z, _FLAG_ZLIB
    return pack_header(MAGIC, n, flags) + body


def decode_bits(payload: bytes, expected_n: int | None = None) -> torch.Tensor:
    """Inverse of :func:`encode_bits`; raises ValueError naming what is wrong with the payload."""
    flags, n, body = read_header(bytes(payload), MAGIC, "bit")
    if expected_n is not None and n != expected_n:
        raise ValueError(f"bit payload carries {n} bits, expected {expected_n}")
    if flags & _FLAG_ZLIB:
        try:
            body = zlib.decompress(body)
        except zlib.error as e:
            raise ValueError(f"bit payload is corrupt (zlib: {e})") from None
    return unpack_bits(body, n)


def signs_to_bits(signs: torch.Tensor) -> torch.Tensor:
    """{-1,+1} (or any real, sign >= 0 -> +1) -> bool, True meaning +1."""
    return signs >= 0


def bits_to_signs(bits: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    return bits.to(dtype) * 2 - 1


def entropy_bits_per_entry(p: float) -> float:
    """Shannon bound for a Bernoulli(p) mask, bits per entry: what an ideal entropy coder achieves."""
    if p <= 0 or p >= 1:
        return 0.0
    return -(p * math.log2(p) + (1 - p) * math.log2(1 - p))
