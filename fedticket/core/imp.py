"""Iterative magnitude pruning with rewinding (Frankle & Carbin 2019; Frankle et al. 2020).

Level 0 trains the dense network. Each later level prunes ``prune_fraction`` of the weights that
are still alive, by trained magnitude, rewinds the surviving weights to the rewind point and
trains again, so level k has density (1 - p)^k exactly (kept = round((1-p)^k · n), at least one).

The rewind point is the initialisation (``rewind="init"``), or the state after ``rewind_fn`` has
trained the dense network for a few iterations (late rewinding: pass a function that trains k
steps), or a state dict you captured yourself (``rewind_state``). Training is yours:
``train_fn(model, mask, level) -> dict`` must keep the mask applied (wrap its optimizer in
``MaskEnforcer(model, mask, optimizer)``); after it returns, the mask is applied once more and
checked, so a train function that forgot cannot silently revive pruned weights.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from fedticket.core.apply import apply_mask
from fedticket.core.mask import Mask
from fedticket.core.prune import kept_count, mask_from_scores
from fedticket.core.selection import prunable_parameters


@dataclass
class IMPLevel:
    level: int
    density: float
    mask: Mask
    metrics: dict = field(default_factory=dict)


def iterative_magnitude_pruning(
    model: nn.Module,
    train_fn: Callable[[nn.Module, Mask, int], dict | None],
    levels: int,
    prune_fraction: float = 0.2,
    *,
    scope: str = "global",
    rewind: str = "init",
    rewind_fn: Callable[[nn.Module], None] | None = None,
    rewind_state: dict | None = None,
    include=None,
    exclude=None,
    min_ndim: int = 2,
    callback: Callable[[IMPLevel], None] | None = None,
    progress: bool = False,
    prune_amount: Callable[[nn.Module, Mask, int], float] | None = None,
) -> list[IMPLevel]:
    """Run levels 0..``levels``; returns one :class:`IMPLevel` per level (level 0 is dense).

    ``prune_amount(model, mask, level)``, when given, replaces the fixed ``prune_fraction``: it
    returns the fraction of the *alive* weights to prune at that level, from the trained model
    (SAP in :mod:`fedticket.core.pqi` sets it from the PQ Index). Kept counts stay exact.
    """
    if not 0.0 < prune_fraction < 1.0:
        raise ValueError(f"prune_fraction must be in (0, 1), got {prune_fraction}")
    if levels < 0:
        raise ValueError(f"levels must be >= 0, got {levels}")
    if rewind not in ("init", "fn", "state"):
        raise ValueError("rewind must be 'init', 'fn' (with rewind_fn) or 'state' (with rewind_state)")
    if rewind == "fn" and rewind_fn is None:
        raise ValueError("rewind='fn' needs rewind_fn, a function training the dense model k steps")
    if rewind == "state" and rewind_state is None:
        raise ValueError("rewind='state' needs rewind_state (a state_dict)")

    mask = Mask.ones_like(model, include, exclude, min_ndim)
    if rewind == "fn":
        rewind_fn(model)
    if rewind == "state":
        model.load_state_dict(rewind_state)
    anchor = copy.deepcopy(model.state_dict())
    n = mask.numel
    results: list[IMPLevel] = []
    it = range(levels + 1)
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc="IMP levels", unit="level")
    for level in it:
        if level > 0:
            trained = prunable_parameters(model, include, exclude, min_ndim)
            scores = {k: trained[k].detach().abs() for k in mask}
            if prune_amount is None:
                target = (1.0 - prune_fraction) ** level
            else:
                frac = float(prune_amount(model, mask, level))
                if not 0.0 <= frac < 1.0:
                    raise ValueError(f"prune_amount returned {frac} at level {level}; need [0, 1)")
                # a count, not a density: the alive count times (1 - frac), then back to a density
                target = max(1, mask.num_kept - int(frac * mask.num_kept)) / n
            mask = mask_from_scores(scores, target, scope, base=mask)
            if scope == "global":
                assert mask.num_kept == kept_count(target, n)
            rewind_weights(model, anchor, mask)
        else:
            apply_mask(model, mask)
        metrics = train_fn(model, mask, level) or {}
        apply_mask(model, mask)
        rec = IMPLevel(level=level, density=mask.density, mask=mask.clone(), metrics=dict(metrics))
        results.append(rec)
        if callback is not None:
            callback(rec)
    return results


@torch.no_grad()
def rewind_weights(model: nn.Module, state: dict, mask: Mask) -> None:
    """Load ``state`` and re-apply ``mask``: the "reset to θ_k ⊙ m" step as a reusable piece."""
    model.load_state_dict(state)
    apply_mask(model, mask)
