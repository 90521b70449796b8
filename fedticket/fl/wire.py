"""The wire format of every model payload, and byte counting from the real messages.

A payload is one Flower ``Array`` of raw bytes (``dtype="uint8"``, our own ``stype``) inside an
``ArrayRecord``: no pickles, no ``.npy`` headers. Two kinds:

* ``fedticket.bits``  core's :func:`~fedticket.core.encode_bits`: core's 8-byte header (magic
  ``FT``, version, flags, bit count) + ``ceil(n/8)`` packed bytes. Masks and signs.
* ``fedticket.f32``   the same header (magic ``FF``, count) + ``4n`` bytes of little-endian
  float32. Dense / subnetwork weights, scores, FedPM probabilities.
* ``fedticket.dbits`` core's :func:`~fedticket.core.entropy.encode_delta`: bits range-coded
  against a reference both sides hold (below 1 bit per entry when few differ). SignScore's
  ``uplink_coding`` / ``downlink_coding: entropy``.
* ``fedticket.rbits`` a ``dbits`` payload that names its reference: the ticket, or the global
  signs of round R that this one receiver holds (+ the CRC-32 of those reference bits), so a
  receiver holding something else refuses it instead of decoding it wrong. SignScore's per-node
  downlink (``signscore.downlink_reference: held``).

Everything a receiver reads is validated (kind, length, header, finiteness); a bad payload raises
:class:`MalformedPayload` whose message is the reason the server logs when it drops a reply.
Byte counts are ``len(array.data)`` summed over the ArrayRecords actually sent or received.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, RecordDict

from fedticket.core.codec import (
    HEADER_BYTES,
    decode_bits,
    encode_bits,
    pack_bits,
    pack_header,
    read_header,
)

BITS = "fedticket.bits"
F32 = "fedticket.f32"
CODED_BITS = "fedticket.dbits"
REF_BITS = "fedticket.rbits"
_F32_MAGIC = b"FF"
_REF_MAGIC = b"FR"
_REF = struct.Struct("<II")   # reference round, CRC-32 of the packed reference bits
_REF_HELD = 1                 # header flag: the reference is a held global, not the ticket


class MalformedPayload(ValueError):
    """A payload that does not decode to what the receiver expects; the message says why."""


def bits_array(bits: torch.Tensor) -> Array:
    blob = encode_bits(torch.as_tensor(bits).reshape(-1).bool())
    return Array(dtype="uint8", shape=(len(blob),), stype=BITS, data=blob)


def floats_array(values: torch.Tensor) -> Array:
    v = torch.as_tensor(values).detach().reshape(-1).to(torch.float32).cpu().numpy()
    blob = pack_header(_F32_MAGIC, v.size) + v.astype("<f4").tobytes()
    return Array(dtype="uint8", shape=(len(blob),), stype=F32, data=blob)


def raw_array(blob: bytes, stype: str) -> Array:
    return Array(dtype="uint8", shape=(len(blob),), stype=stype, data=bytes(blob))


def raw_bytes(array, stype: str) -> bytes:
    """The bytes of a raw ``stype`` payload, or MalformedPayload naming what is wrong."""
    if not isinstance(array, Array):
        raise MalformedPayload(f"payload is a {type(array).__name__}, not a Flower Array")
    if array.stype != stype:
        raise MalformedPayload(f"payload kind {array.stype!r}, expected {stype!r}")
    if array.dtype != "uint8":
        raise MalformedPayload(f"payload dtype {array.dtype!r}, expected raw 'uint8' bytes")
    data = bytes(array.data)
    if tuple(array.shape) != (len(data),):
        raise MalformedPayload(f"payload shape {tuple(array.shape)} does not match its "
                               f"{len(data)} bytes")
    return data


def decode_bits_array(array, n: int) -> torch.Tensor:
    """Flat bool tensor of exactly ``n`` bits, or MalformedPayload naming the problem."""
    data = raw_bytes(array, BITS)
    try:
        return decode_bits(data, expected_n=n)
    except ValueError as e:
        raise MalformedPayload(str(e)) from None


def coded_bits_array(bits: torch.Tensor, reference: torch.Tensor,
                     dither_seed: int | None = None) -> Array:
    """``bits`` range-coded against ``reference`` (which the receiver must hold too);
    ``dither_seed``: the seed of the uniforms the bits were sampled with (a better model)."""
    from fedticket.core.entropy import encode_delta

    blob = encode_delta(torch.as_tensor(bits).reshape(-1).bool(),
                        torch.as_tensor(reference).reshape(-1).bool(), dither_seed=dither_seed)
    return Array(dtype="uint8", shape=(len(blob),), stype=CODED_BITS, data=blob)


def decode_coded_bits_array(array, n: int, reference: torch.Tensor) -> torch.Tensor:
    """Flat bool tensor of ``n`` bits coded against ``reference``, or MalformedPayload."""
    from fedticket.core.entropy import decode_delta

    data = raw_bytes(array, CODED_BITS)
    try:
        return decode_delta(data, reference.reshape(-1).bool(), expected_n=n)
    except ValueError as e:
        raise MalformedPayload(str(e)) from None


def reference_crc(reference: torch.Tensor) -> int:
    """CRC-32 of the packed reference bits: what a ``rbits`` payload checks its receiver holds."""
    return zlib.crc32(pack_bits(torch.as_tensor(reference).reshape(-1).bool()))


def referenced_bits_array(bits: torch.Tensor, reference: torch.Tensor,
                          held_round: int | None) -> Array:
    """``bits`` range-coded against ``reference``: the ticket's signs (``held_round=None``) or
    the global signs of round ``held_round`` the receiver holds; the payload names which."""
    from fedticket.core.entropy import encode_delta

    ref = torch.as_tensor(reference).reshape(-1).bool()
    flags, r = (0, 0) if held_round is None else (_REF_HELD, int(held_round))
    blob = (pack_header(_REF_MAGIC, ref.numel(), flags) + _REF.pack(r, reference_crc(ref))
            + encode_delta(torch.as_tensor(bits).reshape(-1).bool(), ref))
    return Array(dtype="uint8", shape=(len(blob),), stype=REF_BITS, data=blob)


def _counted_body(data: bytes, magic: bytes, what: str, n: int, unit: str) -> tuple[int, bytes]:
    """(flags, body) of a payload whose header must name exactly ``n`` entries; else
    MalformedPayload (a wrong count is another model's or a truncated payload)."""
    try:
        flags, count, body = read_header(data, magic, what)
    except ValueError as e:
        raise MalformedPayload(str(e)) from None
    if count != n:
        raise MalformedPayload(f"{what} payload carries {count} {unit}, expected {n}")
    return flags, body


def reference_of(array, n: int) -> tuple[int | None, int]:
    """(held round or None for the ticket, reference CRC) a ``rbits`` payload is coded against."""
    flags, body = _counted_body(raw_bytes(array, REF_BITS), _REF_MAGIC, "referenced-bit",
                                n, "bits")
    if flags not in (0, _REF_HELD) or len(body) < _REF.size:
        raise MalformedPayload("referenced-bit payload: unknown flags or a truncated header")
    r, crc = _REF.unpack_from(body)
    return (r if flags == _REF_HELD else None), crc


def decode_referenced_bits_array(array, n: int, ticket: torch.Tensor,
                                 held: tuple[int, torch.Tensor] | None) -> torch.Tensor:
    """Flat bool tensor of a ``rbits`` payload; ``held``: (round, signs) the receiver holds.

    A payload coded against something this receiver does not hold (no held signs, another
    round, or the same round with other bits) is a MalformedPayload, never a wrong decode.
    """
    from fedticket.core.entropy import decode_delta

    r, crc = reference_of(array, n)
    if r is None:
        ref = ticket
    elif held is None:
        raise MalformedPayload(f"payload coded against the global of round {r}, but this "
                               "client holds no earlier global (its state is missing); the "
                               "server must send it coded against the ticket")
    elif int(held[0]) != r:
        raise MalformedPayload(f"payload coded against the global of round {r}, but this "
                               f"client holds the one of round {int(held[0])}")
    else:
        ref = held[1]
    ref = torch.as_tensor(ref).reshape(-1).bool()
    if ref.numel() != n or reference_crc(ref) != crc:
        raise MalformedPayload("payload coded against a reference whose CRC-32 does not match "
                               "what this client holds (another run or a damaged state)")
    data = bytes(array.data)[HEADER_BYTES + _REF.size:]
    try:
        return decode_delta(data, ref, expected_n=n)
    except ValueError as e:
        raise MalformedPayload(str(e)) from None


def decode_floats_array(array, n: int) -> torch.Tensor:
    """Flat float32 tensor of exactly ``n`` finite values, or MalformedPayload."""
    _flags, body = _counted_body(raw_bytes(array, F32), _F32_MAGIC, "float", n, "values")
    if len(body) != 4 * n:
        raise MalformedPayload(f"float payload body has {len(body)} bytes, expected {4 * n}")
    v = np.frombuffer(body, dtype="<f4").astype(np.float32)
    if not np.isfinite(v).all():
        bad = int((~np.isfinite(v)).sum())
        raise MalformedPayload(f"float payload has {bad} NaN/inf values")
    return torch.from_numpy(v.copy())


def get_array(content: RecordDict, record: str, key: str = "payload"):
    """``content[record][key]`` or MalformedPayload saying which field is missing."""
    if record not in content.array_records:
        raise MalformedPayload(f"missing ArrayRecord {record!r}")
    rec = content.array_records[record]
    if key not in rec:
        raise MalformedPayload(f"ArrayRecord {record!r} has no {key!r} entry")
    return rec[key]


def payload_nbytes(content: RecordDict) -> int:
    """Bytes of model payload in a message: ``len(data)`` of every Array in every ArrayRecord."""
    return int(sum(len(a.data) for rec in content.array_records.values() for a in rec.values()))


def record(array: Array, key: str = "payload") -> ArrayRecord:
    return ArrayRecord({key: array})


def length_prefixed_parts(data: bytes, off: int, count: int, what: str) -> list[bytes]:
    """``count`` parts, each a little-endian uint32 length then its bytes, from ``off`` to the
    end of ``data``; MalformedPayload (naming ``what``) when truncated or followed by more."""
    parts = []
    for _ in range(count):
        if off + 4 > len(data):
            raise MalformedPayload(f"{what} truncated")
        (m,) = struct.unpack_from("<I", data, off)
        if off + 4 + m > len(data):
            raise MalformedPayload(f"{what} truncated")
        parts.append(data[off + 4:off + 4 + m])
        off += 4 + m
    if off != len(data):
        raise MalformedPayload(f"{what} has {len(data) - off} trailing bytes")
    return parts
