"""Applying a mask: the one place where pruned weights are zeroed and kept at zero.

We hook the optimizer rather than reparametrize modules (``torch.nn.utils.prune`` renames
state_dict keys and breaks ``deepcopy``). ``MaskEnforcer`` registers two hooks on
``optimizer.step``:

* pre-step: zero the gradients of pruned entries, so momentum buffers and Adam moments of pruned
  entries never accumulate anything;
* post-step: zero the pruned weights again, which also undoes anything the update rule adds
  without a gradient (decoupled weight decay, stale momentum from before the mask existed).
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from fedticket.core.mask import Mask


def _params(model_or_params) -> dict[str, torch.Tensor]:
    if isinstance(model_or_params, nn.Module):
        return dict(model_or_params.named_parameters())
    return dict(model_or_params)


@torch.no_grad()
def apply_mask(model_or_params: nn.Module | Mapping[str, torch.Tensor], mask: Mask) -> None:
    """Zero the pruned entries in place. Raises ValueError if the mask does not fit."""
    params = _params(model_or_params)
    mask.check(params)
    for name, m in mask.items():
        p = params[name]
        p.mul_(m.to(device=p.device, dtype=p.dtype))


class MaskEnforcer:
    """Keep ``mask`` applied to ``model`` through every ``optimizer.step()``.

    Usage::

        enforcer = MaskEnforcer(model, mask, optimizer)   # applies the mask now
        ...train as usual...
        enforcer.remove()                                  # detach the hooks
    """

    def __init__(self, model: nn.Module | Mapping[str, torch.Tensor], mask: Mask,
                 optimizer: torch.optim.Optimizer):
        self.params = _params(model)
        mask.check(self.params)
        self.mask = mask
        self._dev_masks: dict[str, torch.Tensor] = {}
        self._handles = [
            optimizer.register_step_pre_hook(self._pre_step),
            optimizer.register_step_post_hook(self._post_step),
        ]
        self.zero_weights()

    def _m(self, name: str, like: torch.Tensor) -> torch.Tensor:
        m = self._dev_masks.get(name)
        if m is None or m.device != like.device or m.dtype != like.dtype:
            m = self.mask[name].to(device=like.device, dtype=like.dtype)
            self._dev_masks[name] = m
        return m

    @torch.no_grad()
    def _pre_step(self, optimizer, args, kwargs):
        for name in self.mask:
            p = self.params[name]
            if p.grad is not None:
                p.grad.mul_(self._m(name, p.grad))

    @torch.no_grad()
    def _post_step(self, optimizer, args, kwargs):
        self.zero_weights()

    @torch.no_grad()
    def zero_weights(self) -> None:
        for name in self.mask:
            p = self.params[name]
            p.mul_(self._m(name, p))

    def set_mask(self, mask: Mask) -> None:
        """Swap in a new mask (e.g. after an ℓ0 projection) and apply it at once."""
        mask.check(self.params)
        self.mask = mask
        self._dev_masks.clear()
        self.zero_weights()

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()
