"""Full-batch node classification: one training run, evaluated every epoch.

One loop serves every method; what differs is passed in:

* ``teacher_logits`` + ``kd_lambda``: TEDDY's distillation, CE on the training nodes plus
  λ·KL(teacher ‖ student) over *all* nodes (:func:`distillation_loss`);
* ``l0_density``: ℓ0-ball projected gradient descent: after every optimizer step the weights are
  projected onto ``{w : ‖w‖_0 ≤ k}``, i.e. the top-k magnitudes are kept (core's ``l0_project`` +
  ``apply_mask``). Pruned weights may come back at a later step if their gradient makes them large
  again: that is what distinguishes PGD from a fixed mask;
* ``fixed_mask``: a mask held fixed for the whole run (core's ``MaskEnforcer``), for the random and
  UGS baselines.

The reported result is the test accuracy at the epoch with the best validation accuracy (ties:
lower validation loss, then the earlier epoch), as in the TEDDY and UGS code. For ℓ0 runs the mask
of that epoch is returned, so the saved mask is the one behind the reported number.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.data import Data

from fedticket.core import Mask, MaskEnforcer, apply_mask, l0_project, prunable_parameters


@dataclass
class TrainResult:
    val_accuracy: float
    test_accuracy: float
    best_epoch: int
    logits: Tensor  # eval-mode logits of the best epoch (the teacher signal when this is dense)
    mask: Mask | None  # weight mask in force at the best epoch (None when dense)
    seconds: float


def accuracy(logits: Tensor, y: Tensor, mask: Tensor) -> float:
    if int(mask.sum()) == 0:
        return float("nan")
    return float((logits[mask].argmax(-1) == y[mask]).float().mean())


def distillation_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """KL(teacher ‖ student) over all nodes at temperature T, times T² (Hinton et al.), so the
    gradient scale does not shrink as T grows; at T = 1 it is TEDDY's plain KL."""
    t = float(temperature)
    log_p_s = F.log_softmax(student_logits / t, dim=-1)
    p_t = F.softmax(teacher_logits.detach() / t, dim=-1)
    return F.kl_div(log_p_s, p_t, reduction="batchmean") * (t * t)


@torch.no_grad()
def evaluate(model: nn.Module, x, edge_index: Tensor, edge_weight: Tensor | None, data: Data):
    model.eval()
    logits = model(x, edge_index, edge_weight)
    val_loss = float(F.cross_entropy(logits[data.val_mask], data.y[data.val_mask]))
    return (logits, accuracy(logits, data.y, data.val_mask), accuracy(logits, data.y, data.test_mask),
            val_loss)


def train_node_classifier(model: nn.Module, x, data: Data, edge_index: Tensor,
                          edge_weight: Tensor | None = None, *, epochs: int = 200, lr: float = 0.01,
                          weight_decay: float = 5e-4, teacher_logits: Tensor | None = None,
                          kd_lambda: float = 0.0, temperature: float = 1.0,
                          l0_density: float | None = None, l0_scope: str = "global",
                          include=None, exclude=None, fixed_mask: Mask | None = None,
                          progress: bool = False, desc: str = "train",
                          step_callback: Callable[[int, Mask | None], None] | None = None
                          ) -> TrainResult:
    """Train ``model`` in place for ``epochs`` full-batch steps; see the module docstring.

    ``step_callback(epoch, mask)`` runs after every optimizer step (and projection), with the mask
    in force; tests use it to check the ℓ0 invariant step by step.
    """
    if l0_density is not None and fixed_mask is not None:
        raise ValueError("pass either l0_density (projection) or fixed_mask, not both")
    use_kd = teacher_logits is not None and kd_lambda > 0
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    enforcer = MaskEnforcer(model, fixed_mask, optimizer) if fixed_mask is not None else None
    prunable = (prunable_parameters(model, include, exclude)
                if l0_density is not None and l0_density < 1.0 else None)
    current_mask: Mask | None = fixed_mask
    if prunable is not None:  # start inside the ℓ0 ball, too
        current_mask = l0_project(prunable, l0_density, l0_scope)
        apply_mask(prunable, current_mask)
    y, train_mask = data.y, data.train_mask
    best = (-1.0, float("inf"))
    best_res: tuple | None = None
    t0 = time.perf_counter()
    epoch_iter = range(epochs)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(epoch_iter, desc=desc, unit="ep", leave=False)
        epoch_iter = bar
    try:
        for epoch in epoch_iter:
            model.train()
            optimizer.zero_grad(set_to_none=True)
            logits = model(x, edge_index, edge_weight)
            loss = F.cross_entropy(logits[train_mask], y[train_mask])
            if use_kd:
                loss = loss + kd_lambda * distillation_loss(logits, teacher_logits, temperature)
            loss.backward()
            optimizer.step()
            if prunable is not None:
                current_mask = l0_project(prunable, l0_density, l0_scope)
                apply_mask(prunable, current_mask)
            if step_callback is not None:
                step_callback(epoch, current_mask)
            out, val_acc, test_acc, val_loss = evaluate(model, x, edge_index, edge_weight, data)
            if (val_acc, -val_loss) > (best[0], -best[1]):
                best = (val_acc, val_loss)
                best_res = (val_acc, test_acc, epoch, out,
                            current_mask.clone() if current_mask is not None else None)
                if bar is not None:
                    bar.set_postfix(val=f"{val_acc:.3f}", test=f"{test_acc:.3f}")
    finally:
        if enforcer is not None:
            enforcer.remove()
        if bar is not None:
            bar.close()
    assert best_res is not None, "epochs must be >= 1"
    val_acc, test_acc, epoch, out, mask = best_res
    return TrainResult(val_accuracy=val_acc, test_accuracy=test_acc, best_epoch=epoch, logits=out,
                       mask=mask, seconds=time.perf_counter() - t0)
