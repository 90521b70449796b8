"""The Mask: parameter name -> bool tensor, the one object both domains prune through.

Invariants (checked on every assignment): keys are non-empty strings, values are bool tensors.
A mask lists only prunable tensors; a parameter it does not list is dense.

One serialisation (:meth:`Mask.encode` / :meth:`Mask.decode`): a layout (JSON list of
``[name, shape]`` in order) + every entry as one bit payload (:func:`~fedticket.core.codec.encode_bits`).
The federated setup message carries exactly these two blobs; mask files and federated checkpoints
store them in a checksummed safetensors file (:mod:`~fedticket.core.tensorfile`): nothing is ever
unpickled, and a damaged file is refused. Files of the older per-entry uint8 layout
(``fedticket.mask/1``, no checksum) still load.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import torch
from torch import nn

from fedticket.core import tensorfile
from fedticket.core.codec import decode_bits, encode_bits, pack_bits, packed_size, unpack_bits
from fedticket.core.selection import prunable_parameters

FORMAT_TAG = "fedticket.mask/2"
LEGACY_FORMAT_TAG = "fedticket.mask/1"  # uint8 per entry, no checksum


class Mask(dict):
    """``dict[str, torch.BoolTensor]`` with density accounting, checks, safe I/O and bit packing."""

    def __init__(self, other: Mapping[str, torch.Tensor] | None = None):
        super().__init__()
        if other is not None:
            for k, v in other.items():
                self[k] = v

    def __setitem__(self, key, value):
        if not isinstance(key, str) or not key:
            raise ValueError(f"mask keys must be non-empty parameter names, got {key!r}")
        if isinstance(value, np.ndarray):
            value = torch.from_numpy(value)
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"mask value for {key!r} must be a tensor, got {type(value).__name__}")
        if value.dtype != torch.bool:
            if value.is_floating_point() or value.dtype in (torch.int8, torch.int16, torch.int32,
                                                            torch.int64, torch.uint8):
                if ((value != 0) & (value != 1)).any():
                    raise ValueError(f"mask value for {key!r} must hold only 0/1 entries")
                value = value != 0
            else:
                raise ValueError(f"mask value for {key!r} has unsupported dtype {value.dtype}")
        super().__setitem__(key, value)

    def update(self, *args, **kwargs):  # route through __setitem__ so invariants hold
        for k, v in dict(*args, **kwargs).items():
            self[k] = v

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    def ones_like(cls, model: nn.Module, include=None, exclude=None, min_ndim: int = 2) -> "Mask":
        params = prunable_parameters(model, include, exclude, min_ndim)
        return cls({n: torch.ones_like(p, dtype=torch.bool, device="cpu") for n, p in params.items()})

    def clone(self) -> "Mask":
        return Mask({k: v.clone() for k, v in self.items()})

    def to(self, device) -> "Mask":
        return Mask({k: v.to(device) for k, v in self.items()})

    def shuffled(self, seed: int = 0) -> "Mask":
        """Same kept count per layer, positions permuted at random: the layer-wise shuffle
        sanity check of the pruning-at-init literature (Synaptic-Flow's ``shuffle()`` assigns
        the permuted tensor to a local name and so leaves the mask unchanged; this one does not).
        """
        g = torch.Generator().manual_seed(int(seed))
        out = Mask()
        for k, v in self.items():
            flat = v.reshape(-1).cpu()
            out[k] = flat[torch.randperm(flat.numel(), generator=g)].reshape(v.shape)
        return out

    def __and__(self, other: "Mask") -> "Mask":
        if set(self) != set(other):
            raise ValueError("cannot intersect masks over different parameter names")
        return Mask({k: self[k] & other[k].to(self[k].device) for k in self})

    # ---- accounting ---------------------------------------------------------------------------
    @property
    def numel(self) -> int:
        return int(sum(v.numel() for v in self.values()))

    @property
    def num_kept(self) -> int:
        # count_nonzero: a bool sum first widens every entry to int64 (2x slower)
        return int(sum(int(torch.count_nonzero(v)) for v in self.values()))

    @property
    def density(self) -> float:
        n = self.numel
        return self.num_kept / n if n else 1.0

    @property
    def sparsity(self) -> float:
        return 1.0 - self.density

    def layer_stats(self) -> list[dict]:
        rows = []
        for k, v in self.items():
            kept = int(torch.count_nonzero(v))
            rows.append({"name": k, "numel": int(v.numel()), "kept": kept,
                         "density": kept / v.numel() if v.numel() else 1.0})
        return rows

    def report(self) -> str:
        """A per-layer table a human reads at a glance."""
        rows = self.layer_stats()
        w = max([len("name")] + [len(r["name"]) for r in rows])
        lines = [f"{'name':<{w}}  {'numel':>10}  {'kept':>10}  {'density':>8}",
                 "-" * (w + 34)]
        for r in rows:
            lines.append(f"{r['name']:<{w}}  {r['numel']:>10}  {r['kept']:>10}  {r['density']:>8.4f}")
        lines.append("-" * (w + 34))
        lines.append(f"{'total':<{w}}  {self.numel:>10}  {self.num_kept:>10}  {self.density:>8.4f}")
        return "\n".join(lines)

    def flat(self) -> torch.Tensor:
        """All entries as one bool vector, keys in insertion order, each row-major."""
        if not self:
            return torch.zeros(0, dtype=torch.bool)
        return torch.cat([v.reshape(-1).cpu() for v in self.values()])

    # ---- checking -----------------------------------------------------------------------------
    def check(self, model_or_state: nn.Module | Mapping[str, torch.Tensor]) -> None:
        """Raise one ValueError naming the first name/shape that does not fit the model."""
        if isinstance(model_or_state, nn.Module):
            params = dict(model_or_state.named_parameters())
        else:
            params = dict(model_or_state)
        for k, v in self.items():
            if k not in params:
                close = [n for n in params if n.endswith(k.split(".")[-1])][:3]
                raise ValueError(
                    f"mask entry {k!r} has no parameter of that name in the model"
                    + (f" (parameters with a similar name: {close})" if close else "")
                    + ": the mask was made for another model")
            if tuple(v.shape) != tuple(params[k].shape):
                raise ValueError(
                    f"mask entry {k!r} has shape {tuple(v.shape)} but the parameter has shape "
                    f"{tuple(params[k].shape)}: the mask was made for another model configuration")

    # ---- the one serialisation ------------------------------------------------------------
    def encode(self) -> tuple[bytes, bytes]:
        """(layout JSON, bit payload): the mask's names and shapes in order, all entries packed."""
        layout = json.dumps([[k, list(v.shape)] for k, v in self.items()]).encode()
        return layout, encode_bits(self.flat())

    @classmethod
    def decode(cls, layout: bytes | str, bits: bytes) -> "Mask":
        """Inverse of :meth:`encode`; ValueError naming what does not fit."""
        try:
            entries = json.loads(layout)
            shapes = [(str(name), tuple(int(s) for s in shape)) for name, shape in entries]
        except (ValueError, TypeError) as e:
            raise ValueError(f"mask layout is not a list of [name, shape]: {e}") from None
        sizes = [int(np.prod(shape)) if shape else 1 for _, shape in shapes]
        flat = decode_bits(bits, expected_n=sum(sizes))
        out, off = cls(), 0
        for (name, shape), k in zip(shapes, sizes, strict=True):
            out[name] = flat[off:off + k].reshape(shape)
            off += k
        return out

    def to_tensors(self, prefix: str = "") -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        """The encoded mask as one uint8 tensor + one metadata entry, for a safetensors file."""
        layout, bits = self.encode()
        tensor = torch.frombuffer(bytearray(bits), dtype=torch.uint8).clone()
        return {f"{prefix}bits": tensor}, {f"{prefix}layout": layout.decode()}

    @classmethod
    def from_tensors(cls, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str],
                     prefix: str = "") -> "Mask":
        bits = tensors[f"{prefix}bits"]
        if bits.dtype != torch.uint8:
            raise ValueError(f"mask bits have dtype {bits.dtype}, expected uint8")
        return cls.decode(metadata[f"{prefix}layout"], bits.numpy().tobytes())

    # ---- files --------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors, meta = self.to_tensors()
        meta.update({"format": FORMAT_TAG, "density": f"{self.density:.8f}"})
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(tensorfile.dumps(tensors, meta))
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Mask":
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"mask file not found: {path}")
        try:
            tensors, meta = tensorfile.loads(path.read_bytes(), str(path), require_checksum=False)
        except OSError as e:
            raise ValueError(f"{path} is not a valid fedticket mask file (unreadable): {e}") from None
        except ValueError as e:
            raise ValueError(f"{e}; it is not a valid fedticket mask file") from None
        fmt = meta.get("format")
        try:
            if fmt == FORMAT_TAG:
                if tensorfile.CHECKSUM_KEY not in meta:
                    raise ValueError("it has no checksum")
                return cls.from_tensors(tensors, meta)
            if fmt == LEGACY_FORMAT_TAG:
                return cls._from_legacy(tensors, meta, path)
        except (ValueError, KeyError) as e:
            if str(path) in str(e):
                raise
            raise ValueError(f"{path} is not a valid fedticket mask file: {e}") from None
        raise ValueError(f"{path} is not a fedticket mask file (format tag {fmt!r}); make one "
                         "with `fedticket prune --out FILE` or Mask.save")

    @classmethod
    def _from_legacy(cls, tensors, meta, path) -> "Mask":
        order = json.loads(meta.get("order", "[]"))
        if sorted(order) != sorted(tensors):
            order = list(tensors)
        out = cls()
        for k in order:
            t = tensors[k]
            if t.dtype != torch.uint8:
                raise ValueError(f"{path}: entry {k!r} has dtype {t.dtype}, expected uint8")
            out[k] = t  # __setitem__ rejects non-0/1 values
        return out

    # ---- wire ---------------------------------------------------------------------------------
    def pack(self) -> dict[str, bytes]:
        """Name -> exactly ceil(numel/8) bytes."""
        return {k: pack_bits(v) for k, v in self.items()}

    @classmethod
    def unpack(cls, packed: Mapping[str, bytes], shapes: Mapping[str, Iterable[int]]) -> "Mask":
        if set(packed) != set(shapes):
            missing = sorted(set(shapes) - set(packed))
            extra = sorted(set(packed) - set(shapes))
            raise ValueError(f"packed mask names do not match: missing {missing}, unexpected {extra}")
        out = cls()
        for k, shape in shapes.items():
            shape = tuple(int(s) for s in shape)
            n = int(np.prod(shape)) if shape else 1
            if len(packed[k]) != packed_size(n):
                raise ValueError(f"packed mask entry {k!r} has {len(packed[k])} bytes, "
                                 f"expected {packed_size(n)} for shape {shape}")
            out[k] = unpack_bits(packed[k], n).reshape(shape)
        return out

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {k: tuple(v.shape) for k, v in self.items()}

    def __repr__(self) -> str:
        return f"Mask({len(self)} tensors, {self.num_kept}/{self.numel} kept, density={self.density:.4g})"
