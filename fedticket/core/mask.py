"""The Mask: parameter name -> bool tensor, the one object both domains prune through.

Invariants (checked on every assignment): keys are non-empty strings, values are bool tensors.
A mask lists only prunable tensors; a parameter it does not list is dense. Files are safetensors
(uint8 per entry plus a format tag in the metadata): nothing is ever unpickled.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import torch
from torch import nn

from fedticket.core.codec import pack_bits, packed_size, unpack_bits
from fedticket.core.selection import prunable_parameters

FORMAT_TAG = "fedticket.mask/1"


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
        return int(sum(int(v.sum()) for v in self.values()))

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
            kept = int(v.sum())
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

    # ---- files --------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        from safetensors.torch import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().cpu().contiguous().to(torch.uint8) for k, v in self.items()}
        meta = {"format": FORMAT_TAG, "density": f"{self.density:.8f}",
                "order": json.dumps(list(self.keys()))}
        tmp = path.with_name(path.name + ".tmp")
        save_file(tensors, str(tmp), metadata=meta)
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Mask":
        from safetensors import SafetensorError, safe_open

        path = Path(path)
        if not path.is_file():
            raise ValueError(f"mask file not found: {path}")
        try:
            with safe_open(str(path), framework="pt") as fh:
                meta = fh.metadata() or {}
                if meta.get("format") != FORMAT_TAG:
                    raise ValueError(
                        f"{path} is not a fedticket mask file (format tag {meta.get('format')!r}); "
                        "make one with `fedticket prune --out FILE` or Mask.save")
                order = json.loads(meta.get("order", "[]"))
                keys = list(fh.keys())
                if sorted(order) != sorted(keys):
                    order = keys
                out = cls()
                for k in order:
                    t = fh.get_tensor(k)
                    if t.dtype != torch.uint8:
                        raise ValueError(f"{path}: entry {k!r} has dtype {t.dtype}, expected uint8")
                    out[k] = t  # __setitem__ rejects non-0/1 values
                return out
        except ValueError as e:
            if str(path) in str(e):
                raise
            raise ValueError(f"{path} is not a valid fedticket mask file: {e}") from None
        except (SafetensorError, OSError, json.JSONDecodeError, RuntimeError) as e:
            raise ValueError(f"{path} is not a valid fedticket mask file (corrupt or foreign): {e}") from None

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
