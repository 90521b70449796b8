"""Pruning-at-init scorers: ``score(method, model, ...) -> {name: tensor}``, higher = keep.

All scorers work on a deep copy of the model with the current mask applied, so the caller's
weights, buffers and train/eval mode are untouched, and iterative pruning sees the pruned network.

* ``random``    i.i.d. uniform scores from a seeded generator.
* ``magnitude`` |θ|.
* ``snip``      |θ ⊙ ∂L/∂θ| over ``num_batches`` batches (Lee et al., 2019).
* ``grasp``     θ ⊙ Hg with g the (stopped) gradient, temperature 200 (Wang et al., 2020); keeping
                the largest θ⊙Hg is removing the largest −θ⊙Hg, as in the paper.
* ``synflow``   |θ ⊙ ∂R/∂θ| with R = 1ᵀ f_|θ|(1): all-ones input of the given shape, absolute
                weights, eval mode, no data at all (Tanaka et al., 2020). ``double=True`` avoids the
                float32 overflow/underflow that deep nets (VGG-16) hit at high compression.
"""

from __future__ import annotations

import copy
import itertools
from typing import Callable, Iterable

import torch
from torch import nn

from fedticket.core.mask import Mask
from fedticket.core.selection import prunable_parameters

METHODS = ("random", "magnitude", "snip", "grasp", "synflow")
DATA_METHODS = ("snip", "grasp")


def _prepared_copy(model: nn.Module, mask: Mask | None, dtype=None) -> nn.Module:
    net = copy.deepcopy(model)
    if dtype is not None:
        net = net.to(dtype)
    if mask is not None:
        params = dict(net.named_parameters())
        mask.check(params)
        with torch.no_grad():
            for n, m in mask.items():
                params[n].mul_(m.to(params[n].device, params[n].dtype))
    return net


def _batches(dataloader: Iterable, num_batches: int):
    if dataloader is None:
        raise ValueError("this scorer needs data: pass dataloader= (and num_batches=)")
    if num_batches < 1:
        raise ValueError(f"num_batches must be >= 1, got {num_batches}")
    got = list(itertools.islice(iter(dataloader), num_batches))
    if not got:
        raise ValueError("the dataloader yielded no batches")
    return got


def score_random(model, names, mask=None, seed: int = 0, **_):
    g = torch.Generator().manual_seed(int(seed))
    params = dict(model.named_parameters())
    return {n: torch.rand(params[n].shape, generator=g, dtype=torch.float64).to(torch.float32)
            for n in names}


@torch.no_grad()
def score_magnitude(model, names, mask=None, **_):
    params = dict(model.named_parameters())
    out = {n: params[n].detach().abs().clone() for n in names}
    if mask is not None:
        for n in names:
            if n in mask:
                out[n].mul_(mask[n].to(out[n].device, out[n].dtype))
    return out


def score_snip(model, names, mask=None, dataloader=None, num_batches: int = 1,
               loss_fn: Callable | None = None, device="cpu", **_):
    loss_fn = loss_fn or nn.functional.cross_entropy
    net = _prepared_copy(model, mask).to(device).eval()
    params = dict(net.named_parameters())
    net.zero_grad(set_to_none=True)
    for x, y in _batches(dataloader, num_batches):
        loss_fn(net(x.to(device)), y.to(device)).backward()
    out = {}
    for n in names:
        g = params[n].grad
        out[n] = (torch.zeros_like(params[n]) if g is None else (g * params[n]).abs()).detach().cpu()
    total = sum(float(v.sum()) for v in out.values())
    if total > 0:  # normalised as in the paper; the ranking is unchanged
        out = {n: v / total for n, v in out.items()}
    return out


def score_grasp(model, names, mask=None, dataloader=None, num_batches: int = 1,
                loss_fn: Callable | None = None, device="cpu", temperature: float = 200.0, **_):
    loss_fn = loss_fn or nn.functional.cross_entropy
    net = _prepared_copy(model, mask).to(device).eval()
    params = dict(net.named_parameters())
    weights = [params[n] for n in names]
    batches = _batches(dataloader, num_batches)
    stopped = None
    for x, y in batches:
        loss = loss_fn(net(x.to(device)) / temperature, y.to(device))
        grads = torch.autograd.grad(loss, weights, allow_unused=True)
        grads = [torch.zeros_like(w) if g is None else g for w, g in zip(weights, grads)]
        stopped = grads if stopped is None else [a + b for a, b in zip(stopped, grads)]
    net.zero_grad(set_to_none=True)
    for x, y in batches:
        loss = loss_fn(net(x.to(device)) / temperature, y.to(device))
        grads = torch.autograd.grad(loss, weights, create_graph=True, allow_unused=True)
        z = sum(((g * s.detach()).sum() for g, s in zip(grads, stopped) if g is not None),
                torch.zeros((), device=device))
        if z.requires_grad:
            z.backward()
    out = {}
    for n, w in zip(names, weights):
        hg = torch.zeros_like(w) if w.grad is None else w.grad
        out[n] = (hg * w).detach().cpu()
    return out


class SynFlowScorer:
    """SynFlow on one linearised copy of the model, reused across pruning iterations.

    The copy (float64 with ``double=True``) holds |θ| for every parameter and buffer, so the
    network computes a positive path sum; each call re-applies the current mask to the stored |θ|
    and takes one forward/backward on an all-ones input. The caller's model is never touched,
    so there are no signs to restore and nothing to undo if scoring fails halfway.
    """

    def __init__(self, model: nn.Module, names, input_shape, double: bool = False, device="cpu"):
        if not input_shape:
            raise ValueError("synflow needs input_shape (e.g. (3, 32, 32)); it never looks at data")
        self.dtype = torch.float64 if double else torch.float32
        self.net = copy.deepcopy(model).to(device=device, dtype=self.dtype).eval()
        with torch.no_grad():
            for t in itertools.chain(self.net.parameters(), self.net.buffers()):
                if t.is_floating_point():
                    t.abs_()
        self.params = dict(self.net.named_parameters())
        self.names = list(names)
        for n, p in self.params.items():  # gradients only where scores are needed
            p.requires_grad_(n in set(self.names))
        self.abs_w = {n: self.params[n].detach().clone() for n in self.names}
        self.x = torch.ones((1, *tuple(int(s) for s in input_shape)), dtype=self.dtype, device=device)

    @torch.no_grad()
    def apply_mask(self, mask: Mask | None) -> None:
        """Reset the linearised weights to |θ| ⊙ mask."""
        for n in self.names:
            w = self.abs_w[n]
            if mask is not None and n in mask:
                torch.where(mask[n].to(w.device), w, torch.zeros((), dtype=w.dtype, device=w.device),
                            out=self.params[n].data)
            else:
                self.params[n].data.copy_(w)

    @torch.no_grad()
    def zero_entries(self, name: str, flat_idx: torch.Tensor) -> None:
        """Prune more entries of one tensor in place (iterative pruning only ever removes)."""
        if flat_idx.numel():
            self.params[name].data.view(-1).index_fill_(0, flat_idx.to(self.params[name].device), 0)

    def __call__(self, mask: Mask | None = None) -> dict[str, torch.Tensor]:
        """Scores for the current weights (after ``apply_mask`` / ``zero_entries``, or ``mask``)."""
        if mask is not None:
            self.apply_mask(mask)
        self.net.zero_grad(set_to_none=True)
        self.net(self.x).sum().backward()
        out = {}
        for n in self.names:
            g = self.params[n].grad
            p = self.params[n].detach()
            out[n] = torch.zeros_like(p) if g is None else g.mul_(p).abs_()
            self.params[n].grad = None
        return out


def score_synflow(model, names, mask=None, input_shape=None, double: bool = False,
                  device="cpu", **kw):
    if kw.get("dataloader") is not None:
        raise ValueError("synflow is data-free: it takes input_shape, not a dataloader")
    if mask is not None:
        mask.check(model)
    scorer = SynFlowScorer(model, names, input_shape, double, device)
    scorer.apply_mask(mask)
    return scorer()


_SCORERS = {
    "random": score_random,
    "magnitude": score_magnitude,
    "snip": score_snip,
    "grasp": score_grasp,
    "synflow": score_synflow,
}


def score(method: str, model: nn.Module, mask: Mask | None = None, *, include=None, exclude=None,
          min_ndim: int = 2, names: Iterable[str] | None = None, **kw) -> dict[str, torch.Tensor]:
    """Scores for every prunable tensor of ``model`` (or the given ``names``)."""
    if method not in _SCORERS:
        raise ValueError(f"unknown pruning method {method!r}; choose one of {', '.join(METHODS)}")
    if names is None:
        names = list(mask.keys()) if mask is not None else list(
            prunable_parameters(model, include, exclude, min_ndim))
    names = list(names)
    was_training = model.training
    try:
        return _SCORERS[method](model, names, mask=mask, **kw)
    finally:
        model.train(was_training)
