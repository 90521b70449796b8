"""safetensors files with a SHA-256 checksum: what every file the project writes is made of.

A safetensors file holds tensors and string metadata only (nothing is ever unpickled), but it
does not notice flipped bytes. :func:`dumps` adds ``sha256`` to the metadata: the digest of every
tensor's name, dtype, shape and bytes (in name order) and of every other metadata entry, so a
damaged tensor, a truncated file or an edited metadata value is refused by :func:`loads`.
"""

from __future__ import annotations

import hashlib
import json

import torch

CHECKSUM_KEY = "sha256"


class ChecksumError(ValueError):
    """The bytes are safetensors but not the ones that were written."""


def _digest(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> str:
    h = hashlib.sha256()
    meta = {k: v for k, v in metadata.items() if k != CHECKSUM_KEY}
    h.update(json.dumps(meta, sort_keys=True).encode())
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(json.dumps([name, str(t.dtype), list(t.shape)]).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def dumps(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> bytes:
    """The file's bytes: ``tensors`` + ``metadata`` + the checksum of both."""
    from safetensors.torch import save

    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    meta = dict(metadata)
    meta[CHECKSUM_KEY] = _digest(tensors, meta)
    return save(tensors, metadata=meta)


def loads(data: bytes, what: str, require_checksum: bool = True
          ) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a file's bytes; ValueError starting with ``what`` when the bytes
    are not safetensors or do not match their checksum (``require_checksum=False``: a file
    without one is accepted, for formats older than the checksum)."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        tensors = load(bytes(data))
        meta = _metadata(bytes(data))
    except (SafetensorError, ValueError, RuntimeError, OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{what} is not a valid safetensors file (corrupt or foreign): {e}") from None
    expected = meta.get(CHECKSUM_KEY)
    if expected is None:
        if require_checksum:
            raise ValueError(f"{what} has no checksum (written by an older fedticket or by "
                             "another program)")
        return tensors, meta
    if _digest(tensors, meta) != expected:
        raise ChecksumError(f"{what} fails its SHA-256 checksum: the file is damaged")
    return tensors, meta


def _metadata(data: bytes) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors header (the format: 8-byte length + JSON)."""
    if len(data) < 8:
        raise ValueError("file too short")
    n = int.from_bytes(data[:8], "little")
    if n > len(data) - 8:
        raise ValueError("header length beyond the end of the file")
    header = json.loads(data[8:8 + n])
    meta = header.get("__metadata__") or {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise ValueError("metadata is not a string map")
    return meta
