"""N:M semi-structured masks: in every group of M consecutive weights, exactly N are kept.

Groups run along each output row's flattened input (row ``o`` of ``w.reshape(out, -1)``: for a
conv kernel ``(out, in, kh, kw)`` that is the row-major ``in·kh·kw`` vector), the layout of the 2:4
sparse tensor cores. Any scorer produces one: :func:`nm_mask_from_scores` turns its scores into an
N:M mask (top N per group, ties to the lower index, like :func:`~fedticket.core.prune.topk_mask_flat`),
and ``prune(..., nm=(N, M))`` does it for every method.

On CUDA, :func:`semi_structured_linear` hands a 2:4-masked linear weight to PyTorch's
semi-structured sparse kernels (``torch.sparse.to_sparse_semi_structured``); on CPU it says why it
cannot and returns ``None``. No speed-up is claimed here: ``simulations/lth_nm_speed.py`` measures it.
"""

from __future__ import annotations

from typing import Mapping

import torch

from fedticket.core.mask import Mask


def parse_nm(text: str | tuple[int, int]) -> tuple[int, int]:
    """``"2:4"`` or ``(2, 4)`` -> ``(2, 4)``, checking 1 <= N <= M."""
    if isinstance(text, str):
        parts = text.replace("/", ":").split(":")
        try:
            n, m = (int(p) for p in parts)
        except ValueError:
            raise ValueError(f"expected N:M like 2:4, got {text!r}") from None
    else:
        n, m = (int(v) for v in text)
    if not 1 <= n <= m:
        raise ValueError(f"N:M needs 1 <= N <= M, got {n}:{m}")
    return n, m


def row_groups(shape, m: int, name: str = "tensor") -> tuple[int, int]:
    """(rows, groups per row) of a tensor split into groups of ``m``; ValueError naming the fix."""
    shape = tuple(shape)
    if len(shape) < 2:
        raise ValueError(f"N:M needs a weight with an input dimension; {name!r} has shape {shape}: "
                         "exclude it from pruning")
    rows = shape[0]
    cols = int(torch.Size(shape[1:]).numel())
    if cols % m:
        raise ValueError(f"layer {name!r} has {cols} inputs per output row, not divisible by M={m}: "
                         f"exclude it from pruning (exclude=[{name!r}]) or choose an M that divides {cols}")
    return rows, cols // m


def nm_topk(scores: torch.Tensor, n: int, m: int, name: str = "tensor") -> torch.Tensor:
    """Bool tensor of ``scores``' shape keeping the N highest scores in each group of M."""
    rows, groups = row_groups(scores.shape, m, name)
    s = scores.detach().reshape(rows * groups, m).cpu()
    if not s.is_floating_point():
        s = s.to(torch.float64)
    s = torch.nan_to_num(s, nan=-float("inf"))
    # a stable descending sort puts the lower index first among equal scores
    order = torch.sort(s, dim=1, descending=True, stable=True).indices[:, :n]
    keep = torch.zeros_like(s, dtype=torch.bool)
    keep.scatter_(1, order, True)
    return keep.reshape(scores.shape)


def nm_mask_from_scores(scores: Mapping[str, torch.Tensor], n: int, m: int) -> Mask:
    n, m = parse_nm((n, m))
    for name, s in scores.items():  # check every layer before any work
        row_groups(s.shape, m, name)
    return Mask({name: nm_topk(s, n, m, name) for name, s in scores.items()})


def is_nm(mask_or_tensor, n: int, m: int) -> bool:
    """True if every group of M along each row keeps exactly N (every entry of a Mask)."""
    items = mask_or_tensor.items() if isinstance(mask_or_tensor, Mapping) else [("t", mask_or_tensor)]
    for name, t in items:
        rows, groups = row_groups(t.shape, m, name)
        if not bool((t.reshape(rows * groups, m).sum(1) == n).all()):
            return False
    return True


def semi_structured_available() -> tuple[bool, str]:
    """Whether PyTorch's 2:4 semi-structured kernels can run here, and why not."""
    if not torch.cuda.is_available():
        return False, "no CUDA device: semi-structured 2:4 kernels need an NVIDIA GPU (sm80+)"
    major, _ = torch.cuda.get_device_capability()
    if major < 8:
        return False, f"CUDA capability {major}.x < 8.0: 2:4 sparse tensor cores need Ampere or newer"
    if not hasattr(torch.sparse, "to_sparse_semi_structured"):
        return False, "this PyTorch has no torch.sparse.to_sparse_semi_structured"
    return True, "ok"


def semi_structured_linear(weight: torch.Tensor, mask: torch.Tensor):
    """A 2:4 semi-structured sparse copy of ``weight ⊙ mask`` (CUDA, fp16/bf16), or None with
    the reason printed when this machine cannot run those kernels."""
    ok, why = semi_structured_available()
    if not ok:
        print(f"semi-structured path skipped: {why}")
        return None
    if not is_nm(mask, 2, 4):
        raise ValueError("the semi-structured kernels need an exact 2:4 mask; make it with nm=(2, 4)")
    w = (weight.detach() * mask.to(weight.device, weight.dtype))
    if w.dtype not in (torch.float16, torch.bfloat16):
        w = w.half()
    return torch.sparse.to_sparse_semi_structured(w.cuda())
