"""A small, deterministic trainer for masked networks that records the early-stop iteration.

**Early-stop iteration** (Frankle & Carbin's measure of learning speed): the training iteration at
which validation accuracy is highest, validation being evaluated every ``eval_every`` iterations
(and at the last one); ties go to the earlier iteration. The reported test accuracy is that of the
weights at that iteration, so the test set never chooses anything.
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass

import torch
from torch import nn

from fedticket.core.apply import MaskEnforcer
from fedticket.core.mask import Mask


@dataclass
class TrainSpec:
    iterations: int = 1500
    batch_size: int = 60
    optimizer: str = "adam"
    lr: float = 1.2e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    eval_every: int = 100


@dataclass
class TrainResult:
    best_val_accuracy: float
    early_stop_iteration: int
    test_accuracy: float
    final_val_accuracy: float
    final_test_accuracy: float
    iterations: int
    seconds: float

    def as_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 2000) -> float:
    was = model.training
    model.eval()
    correct = 0
    for i in range(0, len(y), batch):
        correct += int((model(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum())
    model.train(was)
    return correct / max(1, len(y))


def make_optimizer(model: nn.Module, spec: TrainSpec) -> torch.optim.Optimizer:
    if spec.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)
    if spec.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=spec.lr, momentum=spec.momentum,
                               weight_decay=spec.weight_decay)
    raise ValueError(f"optimizer must be 'adam' or 'sgd', got {spec.optimizer!r}")


class Batches:
    """Seeded minibatches, reshuffled every epoch: the same seed gives the same stream."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int):
        self.x, self.y, self.bs = x, y, int(batch_size)
        self.g = torch.Generator().manual_seed(int(seed))
        self.perm, self.pos = torch.randperm(len(y), generator=self.g), 0

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.pos + self.bs > len(self.perm):
            self.perm, self.pos = torch.randperm(len(self.y), generator=self.g), 0
        idx = self.perm[self.pos:self.pos + self.bs]
        self.pos += self.bs
        return self.x[idx], self.y[idx]


def train(model: nn.Module, mask: Mask | None, splits, spec: TrainSpec, *, seed: int = 0,
          iterations: int | None = None, hook=None, progress: bool = False,
          desc: str = "train") -> TrainResult:
    """Train ``model`` in place with ``mask`` kept applied; returns accuracies and the early-stop
    iteration. ``hook(model, optimizer, it, loss)``, if given, runs after each backward and before
    the optimizer step (GraNet updates its mask there, from the dense gradient). On return the
    model holds its *final* weights (IMP prunes from them, as in the paper)."""
    iterations = spec.iterations if iterations is None else int(iterations)
    opt = make_optimizer(model, spec)
    enforcer = MaskEnforcer(model, mask, opt) if mask is not None else None
    batches = Batches(splits.x_train, splits.y_train, spec.batch_size, seed)
    best_val, best_it, best_state = -1.0, 0, None
    t0 = time.perf_counter()
    it_range = range(1, iterations + 1)
    if progress:
        from tqdm.auto import tqdm

        it_range = tqdm(it_range, desc=desc, unit="it", leave=False, mininterval=1.0)
    model.train()
    try:
        for it in it_range:
            x, y = batches.next()
            opt.zero_grad(set_to_none=True)
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            if hook is not None:
                hook(model, opt, it, loss)
            opt.step()
            if it % spec.eval_every == 0 or it == iterations:
                val = accuracy(model, splits.x_val, splits.y_val)
                if val > best_val:
                    best_val, best_it = val, it
                    best_state = copy.deepcopy(model.state_dict())
    finally:
        if enforcer is not None:
            enforcer.remove()
    seconds = time.perf_counter() - t0
    final_val = accuracy(model, splits.x_val, splits.y_val)
    final_test = accuracy(model, splits.x_test, splits.y_test)
    test = final_test
    if best_state is not None and best_it != iterations:
        final_state = copy.deepcopy(model.state_dict())
        model.load_state_dict(best_state)
        test = accuracy(model, splits.x_test, splits.y_test)
        model.load_state_dict(final_state)
    if iterations == 0:
        best_val = final_val
    return TrainResult(best_val, best_it, test, final_val, final_test, iterations, seconds)
