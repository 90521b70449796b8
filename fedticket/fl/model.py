"""The frozen ticket both sides rebuild from the seed, and the plain training / evaluation loops.

Server and clients call :func:`build_weights` with the same config and get bit-identical frozen
weights, so the float weights never travel: the server sends the seed (inside the config) and the
packed SynFlow mask once. :func:`build_ticket` adds the mask (SynFlow on the server, no data; the
received mask on a client) and the per-layer 1/sqrt(density) rescaling.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from fedticket.core import Mask, apply_mask, prune
from fedticket.fl.task import get_task


def _weights_key(cfg) -> tuple:
    return (getattr(cfg, "task", "vision"), get_task(cfg).model_key(cfg), cfg.model.weight_init,
            int(cfg.seed))


_STATES: dict[tuple, dict[str, torch.Tensor]] = {}  # the last few seeds' weights, per process


def _initial_state(cfg) -> dict[str, torch.Tensor]:
    key = _weights_key(cfg)
    if key not in _STATES:
        if len(_STATES) >= 4:
            _STATES.pop(next(iter(_STATES)))
        _STATES[key] = _fresh_state(cfg, cfg.model.weight_init, int(cfg.seed))
    return _STATES[key]


def _fresh_state(cfg, weight_init: str, seed: int) -> dict[str, torch.Tensor]:
    model = get_task(cfg).build_model(cfg, seed=seed)
    g = torch.Generator().manual_seed(int(seed) + 7919)
    with torch.no_grad():
        if weight_init != "default":
            for pname, p in model.named_parameters():
                if p.ndim >= 2:
                    fan_in = math.prod(p.shape[1:])
                    std = math.sqrt(2.0 / fan_in)  # kaiming normal, ReLU gain
                    w = torch.randn(p.shape, generator=g) * std
                    if weight_init == "signed_constant":
                        w = torch.sign(w) * std
                    p.copy_(w)
                elif pname.endswith("bias"):
                    p.zero_()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def build_weights(cfg) -> nn.Module:
    """A fresh model holding the seed's initial weights (cached per process, returned as a copy)."""
    model = get_task(cfg).build_model(cfg)
    model.load_state_dict(_initial_state(cfg))
    return model


def synflow_mask(cfg, model: nn.Module | None = None) -> Mask:
    """Data-free SynFlow pruning of the seed's weights to ``cfg.density`` (server side)."""
    model = build_weights(cfg) if model is None else model
    if cfg.density >= 1.0:
        return Mask.ones_like(model)
    return prune(model, "synflow", cfg.density, input_shape=get_task(cfg).input_shape(cfg),
                 iterations=cfg.model.prune_iterations, seed=cfg.seed)


@torch.no_grad()
def rescale_kept(model: nn.Module, mask: Mask) -> None:
    """Scale each masked layer by 1/sqrt(its density): a sparse random layer keeps its output scale."""
    params = dict(model.named_parameters())
    for name, m in mask.items():
        kept = int(m.sum())
        if 0 < kept < m.numel():
            params[name].mul_(1.0 / math.sqrt(kept / m.numel()))


@dataclass
class Ticket:
    """Frozen weights (pruned entries zeroed) + the pruning mask they were pruned with."""

    model: nn.Module
    mask: Mask

    @property
    def kept(self) -> int:
        return self.mask.num_kept


def make_ticket(model: nn.Module, mask: Mask, scale_by_density: bool) -> Ticket:
    """Freeze ``model`` under ``mask``: pruned entries zeroed, kept ones optionally rescaled."""
    mask.check(model)
    apply_mask(model, mask)
    if scale_by_density:
        rescale_kept(model, mask)
    return Ticket(model=model, mask=mask)


def build_ticket(cfg, mask: Mask | None = None) -> Ticket:
    """Rebuild the ticket from the seed; compute the SynFlow mask when none is given (server)."""
    model = build_weights(cfg)
    if mask is None:
        mask = synflow_mask(cfg, model)
    return make_ticket(model, mask, cfg.model.scale_by_density)


def user_ticket(model_fn, cfg, input_shape=None, mask: Mask | None = None,
                dense: bool = False) -> Ticket:
    """The ticket of a model fedticket does not ship: ``model_fn()`` built under ``cfg.seed``
    (so server and clients hold the same frozen weights), SynFlow-pruned to ``cfg.density``
    from ``input_shape`` on the server (``mask=None``), the received mask on a client."""
    torch.manual_seed(int(cfg.seed))
    model = model_fn()
    if not isinstance(model, nn.Module):
        raise TypeError(f"the model factory must return a torch.nn.Module, got {type(model).__name__}")
    if mask is None:
        if dense or cfg.density >= 1.0:
            mask = Mask.ones_like(model)
        else:
            if input_shape is None:
                raise ValueError("input_shape (one example's shape, e.g. (1, 28, 28)) is needed "
                                 "to prune the model with SynFlow")
            mask = prune(model, "synflow", cfg.density, input_shape=tuple(input_shape),
                         iterations=cfg.model.prune_iterations, seed=cfg.seed)
    return make_ticket(model, mask, cfg.model.scale_by_density)


def make_optimizer(params, cfg, lr: float) -> torch.optim.Optimizer:
    params = [p for p in params if p.requires_grad]
    if cfg.train.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=cfg.train.weight_decay)
    return torch.optim.SGD(params, lr=lr, momentum=cfg.train.momentum,
                           weight_decay=cfg.train.weight_decay)


def train_epochs(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor,
                 y: torch.Tensor, *, epochs: int, batch_size: int, generator: torch.Generator,
                 max_steps: int | None = None) -> tuple[float, int]:
    """Plain mini-batch cross-entropy training; returns (mean loss, steps). Seeded shuffling."""
    model.train()
    total, steps = 0.0, 0
    n = len(y)
    if n == 0:
        return float("nan"), 0
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, batch_size):
            if max_steps is not None and steps >= max_steps:
                return total / max(steps, 1), steps
            idx = order[start:start + batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            optimizer.step()
            total += float(loss.detach())
            steps += 1
    return total / max(steps, 1), steps


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000
             ) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of ``model`` on (x, y)."""
    was_training = model.training
    model.eval()
    correct, loss, n = 0, 0.0, len(y)
    for start in range(0, n, batch_size):
        out = model(x[start:start + batch_size])
        yy = y[start:start + batch_size]
        loss += float(F.cross_entropy(out, yy, reduction="sum"))
        correct += int((out.argmax(1) == yy).sum())
    model.train(was_training)
    return (correct / n if n else float("nan")), (loss / n if n else float("nan"))

