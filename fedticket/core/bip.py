"""BiP: bi-level pruning (Zhang et al., "Advancing Model Pruning via Bi-level Optimization",
NeurIPS 2022), first-order form, as a trainer that returns a mask at an exact target density.

Variables: weights θ (lower level) and continuous mask scores s ∈ [0, 1] (upper level). The
network runs with the hard mask m = top-k(s) (exact count, global or per layer) on z = m ⊙ θ,
and each iteration alternates, on two different minibatches:

* **lower level** (SGD on θ):   θ ← θ - α · ∇_θ L(m ⊙ θ)  =  θ - α · m ⊙ g
* **upper level** (projected SGD on s):  s ← Π_[0,1]( s - β · (θ ⊙ g - (1/γ) · m ⊙ g ⊙ g) )

where g = ∂L/∂z. The first term is the straight-through gradient of L with respect to the mask;
the second is BiP's implicit gradient through θ*(m) with the lower level's Hessian taken as γ·I
(their "Hessian-free" assumption): dθ*/dm = -(1/γ) ∇²_{mθ} L, and ∇²_{mθ} L(m⊙θ) ≈ diag(g).
No retraining follows: the returned weights are already trained under the returned mask.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from torch import nn
from torch.func import functional_call

from fedticket.core.mask import Mask
from fedticket.core.prune import mask_from_scores
from fedticket.core.selection import prunable_parameters


@dataclass
class BiPResult:
    mask: Mask
    scores: dict
    iterations: int
    seconds: float
    history: list


def bip_prune(model: nn.Module, batches: Iterator | Callable[[], tuple], density: float, *,
              iterations: int = 1000, lr_weights: float = 0.01, lr_scores: float = 0.01,
              momentum: float = 0.9, gamma: float = 1.0, scope: str = "global",
              loss_fn=None, include=None, exclude=None, min_ndim: int = 2,
              log_every: int = 0, progress: bool = False) -> BiPResult:
    """Run BiP on ``model`` (trained in place: on return its prunable weights are θ ⊙ mask).

    ``batches`` is an iterator (or a zero-argument function) yielding ``(x, y)``; each iteration
    takes two batches, one per level. Scores start at |θ| scaled into [0, 1], so BiP starts from
    the magnitude mask of the (ideally pre-trained) model.
    """
    if gamma <= 0:
        raise ValueError(f"gamma must be > 0, got {gamma}")
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    loss_fn = loss_fn or nn.functional.cross_entropy
    nxt = batches if callable(batches) else (lambda it=iter(batches): next(it))
    prunable = prunable_parameters(model, include, exclude, min_ndim)
    names = list(prunable)
    with torch.no_grad():
        top = max(float(p.abs().max()) for p in prunable.values()) or 1.0
        scores = {n: (p.detach().abs() / top).clone() for n, p in prunable.items()}
    opt_w = torch.optim.SGD(model.parameters(), lr=lr_weights, momentum=momentum)
    opt_s = torch.optim.SGD([s.requires_grad_() for s in scores.values()], lr=lr_scores,
                            momentum=momentum)
    history: list[dict] = []
    t0 = time.perf_counter()
    rng = range(iterations)
    if progress:
        from tqdm.auto import tqdm

        rng = tqdm(rng, desc="BiP", unit="it", leave=False, mininterval=1.0)
    model.train()

    def masked_grad(mask: Mask, x, y):
        """Loss on z = m ⊙ θ; returns (loss, {name: dL/dz}); other parameters get .grad."""
        z = {n: (prunable[n].detach() * mask[n].to(prunable[n].dtype)).requires_grad_()
             for n in names}
        loss = loss_fn(functional_call(model, z, (x,), strict=False), y)
        loss.backward()
        return loss, {n: z[n].grad for n in names}

    for it in rng:
        mask = mask_from_scores({n: s.detach() for n, s in scores.items()}, density, scope)
        mf = {n: mask[n].to(prunable[n].dtype) for n in names}
        # lower level: one SGD step on θ under the current hard mask
        x, y = nxt()
        opt_w.zero_grad(set_to_none=True)
        loss_w, g = masked_grad(mask, x, y)
        for n in names:
            prunable[n].grad = mf[n] * g[n]
        opt_w.step()
        # upper level: straight-through mask gradient plus the implicit-gradient correction
        x, y = nxt()
        opt_w.zero_grad(set_to_none=True)
        loss_s, g = masked_grad(mask, x, y)
        opt_w.zero_grad(set_to_none=True)  # the upper level does not move θ or the biases
        opt_s.zero_grad(set_to_none=True)
        for n in names:
            theta = prunable[n].detach()
            scores[n].grad = theta * g[n] - (1.0 / gamma) * mf[n] * g[n] * g[n]
        opt_s.step()
        with torch.no_grad():
            for s in scores.values():
                s.clamp_(0.0, 1.0)
        if log_every and (it + 1) % log_every == 0:
            history.append({"iteration": it + 1, "loss_weights": float(loss_w.detach()),
                            "loss_scores": float(loss_s.detach())})
    mask = mask_from_scores({n: s.detach() for n, s in scores.items()}, density, scope)
    with torch.no_grad():
        for n in names:
            prunable[n].mul_(mask[n].to(prunable[n].dtype))
    return BiPResult(mask, {n: s.detach() for n, s in scores.items()}, iterations,
                     time.perf_counter() - t0, history)
