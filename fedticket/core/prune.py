"""From scores to a Mask at an exact target density, one-shot or iteratively.

Kept count is ``max(1, round(density * n))`` over all prunable entries (global scope) or per
tensor (layer scope). Ties are broken by flat index (lower index kept first), so the same scores
always give the same mask. Selection is O(n) (``kthvalue`` plus a tie pass), so 100 SynFlow
iterations on VGG-16 do not spend their time sorting.
"""

from __future__ import annotations

import functools
import math
from typing import Mapping

import torch
from torch import nn

from fedticket.core.mask import Mask
from fedticket.core.scorers import DATA_METHODS, METHODS, SynFlowScorer, score
from fedticket.core.selection import prunable_parameters


def _check_density(density: float) -> float:
    density = float(density)
    if not (0.0 < density <= 1.0) or math.isnan(density):
        raise ValueError(f"density must be in (0, 1], got {density}")
    return density


def kept_count(density: float, n: int) -> int:
    return min(n, max(1, int(round(density * n)))) if n else 0


def topk_mask_flat(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Bool vector keeping exactly ``k`` highest scores; ties go to the lower index. O(n)."""
    n = scores.numel()
    if k >= n:
        return torch.ones(n, dtype=torch.bool)
    if k <= 0:
        return torch.zeros(n, dtype=torch.bool)
    s = scores.reshape(-1)
    if not s.is_floating_point():
        s = s.to(torch.float64)
    s = torch.nan_to_num(s, nan=-math.inf)
    thr = torch.kthvalue(s, n - k + 1).values  # the k-th largest value
    keep = s > thr
    need = k - int(keep.sum())
    if need > 0:
        eq = torch.nonzero(s == thr).reshape(-1)[:need]
        keep[eq] = True
    return keep


def mask_from_scores(scores: Mapping[str, torch.Tensor], density: float, scope: str = "global",
                     base: Mask | None = None) -> Mask:
    """Keep the top ``density`` fraction of entries; entries pruned in ``base`` stay pruned.

    ``density`` is relative to all entries, not to those alive in ``base``. Only entries alive in
    ``base`` are ranked, so iterative pruning gets cheaper as the network gets sparser.
    """
    density = _check_density(density)
    if scope not in ("global", "layer"):
        raise ValueError(f"scope must be 'global' or 'layer', got {scope!r}")
    names = list(scores)
    alive_idx: dict[str, torch.Tensor | None] = {}
    vals: dict[str, torch.Tensor] = {}
    for n in names:
        s = scores[n].detach().reshape(-1).cpu()
        if base is not None and n in base:
            idx = torch.nonzero(base[n].reshape(-1).cpu()).reshape(-1)
            alive_idx[n] = idx
            vals[n] = s[idx]
        else:
            alive_idx[n] = None
            vals[n] = s
    out = Mask()

    def scatter(n: str, keep: torch.Tensor) -> torch.Tensor:
        idx = alive_idx[n]
        if idx is None:
            return keep.reshape(scores[n].shape)
        full = torch.zeros(scores[n].numel(), dtype=torch.bool)
        full[idx[keep]] = True
        return full.reshape(scores[n].shape)

    if scope == "global":
        total = sum(scores[n].numel() for n in names)
        dtype = functools.reduce(torch.promote_types, (v.dtype for v in vals.values()))
        allv = torch.cat([vals[n].to(dtype) for n in names])
        k = min(kept_count(density, total), allv.numel())
        keep = topk_mask_flat(allv, k)
        off = 0
        for n in names:
            sz = vals[n].numel()
            out[n] = scatter(n, keep[off:off + sz])
            off += sz
    else:
        for n in names:
            k = min(kept_count(density, scores[n].numel()), vals[n].numel())
            out[n] = scatter(n, topk_mask_flat(vals[n], k))
    return out


def l0_project(params: Mapping[str, torch.Tensor], density: float, scope: str = "global") -> Mask:
    """Projection onto the ℓ0 ball: the mask of the top-|w| entries (exact count, ties by index).

    The caller applies it (``apply_mask``) after each optimizer step: projected gradient descent.
    """
    return mask_from_scores({n: p.detach().abs() for n, p in params.items()}, density, scope)


def density_schedule(density: float, iterations: int, schedule: str = "exponential") -> list[float]:
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    if schedule == "exponential":
        return [density ** ((t + 1) / iterations) for t in range(iterations)]
    if schedule == "linear":
        return [1.0 - (1.0 - density) * (t + 1) / iterations for t in range(iterations)]
    raise ValueError(f"schedule must be 'exponential' or 'linear', got {schedule!r}")


def prune(model: nn.Module, method: str, density: float, *, scope: str = "global",
          iterations: int | None = None, schedule: str = "exponential", input_shape=None,
          dataloader=None, num_batches: int = 1, loss_fn=None, seed: int = 0, double: bool = False,
          include=None, exclude=None, min_ndim: int = 2, base: Mask | None = None,
          progress: bool = False, device="cpu", nm: tuple[int, int] | str | None = None) -> Mask:
    """Prune ``model``'s prunable tensors to ``density`` with ``method``; returns the Mask.

    The model itself is not modified (apply the mask with ``apply_mask`` or ``MaskEnforcer``).
    SynFlow defaults to 100 iterations with the exponential schedule; others to one shot.

    ``nm=(N, M)`` turns the method's scores into an N:M mask (:mod:`fedticket.core.nm`); density is
    then N/M in every layer (``density`` may be None, or must equal N/M). Scoring is one shot: N:M
    fixes each layer's density, so there is no layer collapse for iterative scoring to avoid.
    """
    if nm is not None:
        return _prune_nm(model, method, density, nm, scope=scope, iterations=iterations,
                         input_shape=input_shape, dataloader=dataloader, num_batches=num_batches,
                         loss_fn=loss_fn, seed=seed, double=double, include=include,
                         exclude=exclude, min_ndim=min_ndim, base=base, device=device)
    if density is None:
        raise ValueError("density is required (or pass nm=(N, M))")
    density = _check_density(density)
    if method not in METHODS:
        raise ValueError(f"unknown pruning method {method!r}; choose one of {', '.join(METHODS)}")
    if scope not in ("global", "layer"):
        raise ValueError(f"scope must be 'global' or 'layer', got {scope!r}")
    if method == "synflow" and dataloader is not None:
        raise ValueError("synflow is data-free: pass input_shape, not a dataloader")
    if method in DATA_METHODS and dataloader is None:
        raise ValueError(f"{method} needs data: pass dataloader= and num_batches=")
    if iterations is None:
        iterations = 100 if method == "synflow" else 1
    names = list(prunable_parameters(model, include, exclude, min_ndim))
    mask = base.clone() if base is not None else Mask.ones_like(model, include, exclude, min_ndim)
    mask.check(model)
    shapes = {n: tuple(mask[n].shape) for n in names}
    numels = {n: mask[n].numel() for n in names}
    total = sum(numels.values())
    # Alive entries are tracked as flat indices: each iteration ranks only what is still alive
    # and never rebuilds full-size masks, so 100 iterations cost little beyond the scorer itself.
    alive = {n: torch.nonzero(mask[n].reshape(-1).cpu()).reshape(-1) for n in names}
    steps = density_schedule(density, iterations, schedule)
    it = steps
    if progress and iterations > 1:
        from tqdm.auto import tqdm

        it = tqdm(steps, desc=f"{method} pruning", unit="it", leave=False)
    synflow = None
    if method == "synflow":
        synflow = SynFlowScorer(model, names, input_shape, double=double, device=device)
        synflow.apply_mask(mask)

    def current_mask() -> Mask:
        out = Mask()
        for n in names:
            full = torch.zeros(numels[n], dtype=torch.bool)
            full[alive[n]] = True
            out[n] = full.reshape(shapes[n])
        return out

    for d in it:
        if synflow is not None:
            s = synflow()
        else:
            s = score(method, model, current_mask(), names=names, input_shape=input_shape,
                      dataloader=dataloader, num_batches=num_batches, loss_fn=loss_fn, seed=seed,
                      double=double, device=device)
        vals = {n: s[n].detach().reshape(-1).cpu()[alive[n]] for n in names}
        if scope == "global":
            allv = torch.cat([vals[n] for n in names])
            keep_all = topk_mask_flat(allv, min(kept_count(d, total), allv.numel()))
            keeps, off = {}, 0
            for n in names:
                keeps[n] = keep_all[off:off + vals[n].numel()]
                off += vals[n].numel()
        else:
            keeps = {n: topk_mask_flat(vals[n], min(kept_count(d, numels[n]), vals[n].numel()))
                     for n in names}
        for n in names:
            if synflow is not None:
                synflow.zero_entries(n, alive[n][~keeps[n]])
            alive[n] = alive[n][keeps[n]]
    return current_mask()


def _prune_nm(model, method, density, nm, *, scope, iterations, input_shape, dataloader,
              num_batches, loss_fn, seed, double, include, exclude, min_ndim, base, device) -> Mask:
    from fedticket.core.nm import nm_mask_from_scores, parse_nm, row_groups

    n, m = parse_nm(nm)
    if density is not None and abs(float(density) - n / m) > 1e-9:
        raise ValueError(f"an {n}:{m} mask has density {n / m:g}; drop density or set it to {n / m:g}")
    if method not in METHODS:
        raise ValueError(f"unknown pruning method {method!r}; choose one of {', '.join(METHODS)}")
    if iterations not in (None, 1):
        raise ValueError("N:M pruning scores once (each layer's density is fixed at N/M); "
                         "drop iterations")
    if base is not None:
        raise ValueError("N:M pruning starts from the dense model; a base mask is not supported")
    if method in DATA_METHODS and dataloader is None:
        raise ValueError(f"{method} needs data: pass dataloader= and num_batches=")
    names = list(prunable_parameters(model, include, exclude, min_ndim))
    params = dict(model.named_parameters())
    for name in names:  # the divisibility error comes before any scoring work
        row_groups(params[name].shape, m, name)
    s = score(method, model, None, names=names, input_shape=input_shape, dataloader=dataloader,
              num_batches=num_batches, loss_fn=loss_fn, seed=seed, double=double, device=device)
    return nm_mask_from_scores(s, n, m)
