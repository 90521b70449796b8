"""GraNet: gradual magnitude pruning with zero-cost neuroregeneration (Liu et al., "Sparse Training
via Boosting Pruning Plasticity with Neuroregeneration", NeurIPS 2021), as a training-time schedule.

Every ``every`` iterations from ``start``, and at ``end``, :meth:`GraNet.update` (call it after
``loss.backward()`` and before ``optimizer.step()``, when the dense gradient is there):

1. **gradual pruning** to the density of Zhu & Gupta's cubic schedule,
   ``s_t = s_f + (s_i - s_f) · (1 - (t - start) / (end - start))^3`` (sparsity s = 1 - density),
   by weight magnitude, global or per layer, among the weights still alive;
2. **neuroregeneration**: in every layer, the ``r_t`` fraction of its alive weights with the smallest
   magnitude is removed and as many dead weights with the largest gradient magnitude are regrown,
   at zero (that is the "zero cost": nothing is re-initialised, the next step trains them).
   ``r_t = α/2 · (1 + cos(π · (t - start) / (end - start)))``, a cosine decay from α to 0.

Both steps keep exact counts: after an update at iteration t the mask keeps exactly
``kept_count(density_at(t), n)`` weights (global scope; per layer with ``scope="layer"``).
**Dense-to-sparse** starts from the dense network (``init_density=1``); **sparse-to-sparse**
starts from a random mask of ``init_density`` in every layer (the paper uses ERK; uniform here).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from fedticket.core.apply import MaskEnforcer
from fedticket.core.mask import Mask
from fedticket.core.prune import mask_from_scores, topk_mask_flat
from fedticket.core.selection import prunable_parameters


class GraNet:
    def __init__(self, model: nn.Module, final_density: float, *, start: int, end: int,
                 every: int = 100, init_density: float = 1.0, alpha: float = 0.5,
                 scope: str = "global", seed: int = 0, include=None, exclude=None,
                 min_ndim: int = 2):
        if not 0.0 < final_density <= init_density <= 1.0:
            raise ValueError(f"need 0 < final_density <= init_density <= 1, got "
                             f"{final_density} and {init_density}")
        if not 0 <= start < end:
            raise ValueError(f"need 0 <= start < end, got start={start}, end={end}")
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        if not 0.0 <= alpha < 1.0:
            raise ValueError(f"alpha (initial regrowth fraction) must be in [0, 1), got {alpha}")
        if scope not in ("global", "layer"):
            raise ValueError(f"scope must be 'global' or 'layer', got {scope!r}")
        self.model, self.scope = model, scope
        self.final_density, self.init_density = float(final_density), float(init_density)
        self.start, self.end, self.every, self.alpha = int(start), int(end), int(every), float(alpha)
        self.params = prunable_parameters(model, include, exclude, min_ndim)
        if init_density < 1.0:  # sparse-to-sparse: a random mask at init_density in every layer
            g = torch.Generator().manual_seed(int(seed))
            scores = {n: torch.rand(p.shape, generator=g) for n, p in self.params.items()}
            self.mask = mask_from_scores(scores, init_density, "layer")
        else:
            self.mask = Mask.ones_like(model, include, exclude, min_ndim)
        self.enforcer: MaskEnforcer | None = None
        self.history: list[dict] = []

    # ---- schedules ------------------------------------------------------------------------
    def _progress(self, t: int) -> float:
        return min(1.0, max(0.0, (t - self.start) / (self.end - self.start)))

    def density_at(self, t: int) -> float:
        s_i, s_f = 1.0 - self.init_density, 1.0 - self.final_density
        s = s_f + (s_i - s_f) * (1.0 - self._progress(t)) ** 3
        return 1.0 - s

    def regrow_fraction_at(self, t: int) -> float:
        return 0.5 * self.alpha * (1.0 + math.cos(math.pi * self._progress(t)))

    def is_update(self, t: int) -> bool:
        # ``end`` always updates, so the final density is reached whatever ``every`` is
        return t == self.end or (self.start <= t < self.end and (t - self.start) % self.every == 0)

    # ---- training hook --------------------------------------------------------------------
    def attach(self, optimizer: torch.optim.Optimizer) -> None:
        if self.enforcer is not None:
            self.enforcer.remove()
        self.enforcer = MaskEnforcer(self.model, self.mask, optimizer)

    def __call__(self, model, optimizer, t: int, loss=None) -> None:
        """The trainer hook: ``hook(model, optimizer, t, loss)`` after backward, before step."""
        if self.enforcer is None:
            self.attach(optimizer)
        if self.is_update(t):
            self.update(t)

    @torch.no_grad()
    def update(self, t: int) -> dict:
        """Prune to ``density_at(t)`` then prune-and-regrow; reads the gradients in ``.grad``."""
        density = self.density_at(t)
        mags = {n: p.detach().abs().cpu() for n, p in self.params.items()}
        mask = mask_from_scores(mags, density, self.scope, base=self.mask)
        r = self.regrow_fraction_at(t)
        regrown = 0
        if r > 0:
            new = Mask()
            for n, p in self.params.items():
                m = mask[n].reshape(-1)
                alive = torch.nonzero(m).reshape(-1)
                k = int(r * alive.numel())
                if k == 0 or p.grad is None:
                    new[n] = mask[n]
                    continue
                # drop the k weakest alive weights ...
                drop = alive[topk_mask_flat(-mags[n].reshape(-1)[alive], k)]
                m = m.clone()
                m[drop] = False
                # ... and grow the k dead ones with the largest |gradient| (dropped ones included)
                dead = torch.nonzero(~m).reshape(-1)
                g = p.grad.detach().abs().cpu().reshape(-1)[dead]
                grow = dead[topk_mask_flat(g, k)]
                m[grow] = True
                new[n] = m.reshape(mask[n].shape)
                regrown += int((~mask[n].reshape(-1))[grow].sum())
            mask = new
        self.mask = mask
        if self.enforcer is not None:
            self.enforcer.set_mask(mask)  # regrown weights are zero already: zero-cost
        else:
            for n, p in self.params.items():
                p.mul_(mask[n].to(p.device, p.dtype))
        rec = {"iteration": t, "density_target": density, "density": mask.density,
               "kept": mask.num_kept, "regrow_fraction": r, "regrown": regrown}
        self.history.append(rec)
        return rec

    def detach(self) -> Mask:
        if self.enforcer is not None:
            self.enforcer.remove()
            self.enforcer = None
        return self.mask
