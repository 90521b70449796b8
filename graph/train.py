"""Full-batch node classification: the one training loop of the graph side.

Every method trains through :func:`train_node_classifier`; what differs is passed in:

* ``teacher_logits`` + ``kd_lambda``: TEDDY's distillation, CE on the training nodes plus
  λ·KL(teacher ‖ student) over *all* nodes (:func:`distillation_loss`);
* ``l0_keep``: ℓ0-ball projected gradient descent as in the TEDDY code: after every optimizer
  step the parameters are projected onto ``{θ : ‖θ‖_0 ≤ k}`` (the top-k magnitudes stay, the rest
  become 0). With ``l0_params="all"`` (TEDDY's choice) the ball covers every parameter of the
  model in one global selection (:mod:`fedticket.core.l0ball`); ``"weights"`` covers only the weight matrices
  and attention vectors. Pruned entries keep their gradients and Adam moments and come back when
  they grow large again: that is what distinguishes PGD from a fixed mask;
* ``l0_ramp``: a sparsity ramp for that projection (fedticket's option, not TEDDY's): the budget
  falls from every entry to ``l0_keep`` over the first ``l0_ramp`` steps on gradual magnitude
  pruning's cubic schedule (:func:`fedticket.core.l0ball.ramp_keep`), and the best-validation
  pick only counts steps at the final budget, so the reported number is always the level's;
* ``fixed_mask``: a mask held fixed for the whole run (core's ``MaskEnforcer``), for the random and
  UGS baselines;
* ``forward`` / ``regularizer`` / ``extra_params`` / ``snapshot``: UGS's mask phase, which trains
  learnable masks next to the weights, adds their ℓ1 penalty and keeps the masks of the best epoch.

The reported result is the test accuracy at the epoch with the best validation accuracy, ties
going to the *later* epoch, as in the TEDDY and UGS code (``acc_val >= best``). For ℓ0 runs the
mask of that epoch is returned, so the saved mask is the one behind the reported number.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.data import Data

from fedticket.core import Mask, MaskEnforcer, apply_mask, l0_project, prunable_parameters
from fedticket.core.l0ball import FlatParameters, L0Ball, ramp_keep, weights_to_keep
from graph.ops import FusedAdam


@dataclass
class TrainResult:
    val_accuracy: float
    test_accuracy: float
    best_epoch: int
    logits: Tensor  # eval-mode logits of the best epoch (the teacher signal when this is dense)
    mask: Mask | None  # weight mask in force at the best epoch (None when dense)
    seconds: float
    state: Any = None  # what ``snapshot()`` returned at the best epoch (UGS: its masks)
    last_logits: Tensor | None = None  # eval-mode logits after the last step (teddy.teacher: last)


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


def l0_parameters(model: nn.Module, which: str = "all", include=None, exclude=None) -> dict[str, nn.Parameter]:
    """The parameters an ℓ0 projection covers: ``"all"`` trainable ones (TEDDY) or ``"weights"``
    (core's prunable selection: tensors with ``ndim >= 2``)."""
    if which == "all":
        return {n: p for n, p in model.named_parameters() if p.requires_grad}
    if which == "weights":
        return dict(prunable_parameters(model, include, exclude))
    raise ValueError(f"l0_params must be 'all' or 'weights', got {which!r}")


def train_node_classifier(model: nn.Module, x, data: Data, edge_index: Tensor,
                          edge_weight: Tensor | None = None, *, epochs: int = 200, lr: float = 0.01,
                          weight_decay: float = 5e-4, teacher_logits: Tensor | None = None,
                          kd_lambda: float = 0.0, temperature: float = 1.0,
                          l0_keep: int | None = None, l0_density: float | None = None,
                          l0_params: str = "all", l0_ramp: int = 0,
                          l0_scope: str = "global", include=None, exclude=None,
                          fixed_mask: Mask | None = None,
                          forward: Callable[[], Tensor] | None = None,
                          regularizer: Callable[[], Tensor] | None = None,
                          extra_params: list[Tensor] | None = None,
                          snapshot: Callable[[], Any] | None = None,
                          progress: bool = False, desc: str = "train",
                          step_callback: Callable[[int, Mask | None], None] | None = None
                          ) -> TrainResult:
    """Train ``model`` in place for ``epochs`` full-batch steps; see the module docstring.

    ``l0_keep`` is the number of entries the projection keeps (None: no projection);
    ``l0_ramp``: steps over which the budget falls to ``l0_keep`` (0: from the first step).
    ``l0_density`` says the same as a fraction of the projected entries (kept for callers of the
    earlier signature; TEDDY's count, ``n - ceil((1 - density) · n)``).
    ``forward()`` replaces ``model(x, edge_index, edge_weight)`` (it sees ``model.training``).
    ``step_callback(epoch, mask)`` runs after every optimizer step (and projection), with the mask
    in force; tests use it to check the ℓ0 invariant step by step.
    """
    if l0_density is not None:
        if l0_keep is not None:
            raise ValueError("pass l0_keep or l0_density, not both")
        if l0_density < 1.0:
            n = sum(p.numel() for p in l0_parameters(model, l0_params, include, exclude).values())
            l0_keep = weights_to_keep(n, 1.0 - l0_density)
    if l0_keep is not None and fixed_mask is not None:
        raise ValueError("pass either l0_keep (projection) or fixed_mask, not both")
    use_kd = teacher_logits is not None and kd_lambda > 0
    groups = [{"params": list(model.parameters()), "weight_decay": weight_decay}]
    if extra_params:
        # the UGS code's one Adam decays its masks like its weights
        groups.append({"params": list(extra_params), "weight_decay": weight_decay})
    # fused Adam: one kernel over all tensors (3x cheaper than the foreach path on this CPU)
    if fixed_mask is None:
        # the same kernel and state without Optimizer.step, which loads torch._dynamo (1.3-1.9 s
        # of a sweep's start-up, see graph.defer_dynamo); every group has the same lr and decay
        optimizer = FusedAdam([p for g in groups for p in g["params"]], lr=lr,
                              weight_decay=weight_decay)
    else:   # MaskEnforcer edits the optimizer's per-parameter state
        optimizer = torch.optim.Adam(groups, lr=lr, fused=True)
    enforcer = MaskEnforcer(model, fixed_mask, optimizer) if fixed_mask is not None else None
    ball = layer_params = flat = None
    layer_density = 1.0
    n_ball = 0
    if l0_keep is not None:
        params = l0_parameters(model, l0_params, include, exclude)
        n_ball = sum(p.numel() for p in params.values())
        if l0_scope == "global":
            flat = FlatParameters(params)
            ball = L0Ball(flat, l0_keep) if l0_keep < flat.numel else None
        elif l0_scope == "layer":
            layer_params = params
            layer_density = l0_keep / n_ball
        else:
            raise ValueError(f"l0_scope must be 'global' or 'layer', got {l0_scope!r}")
    current_mask: Mask | None = fixed_mask
    y, train_mask = data.y, data.train_mask
    best_val = -1.0
    best_res: tuple | None = None
    last_out: Tensor | None = None
    ramp = int(l0_ramp) if (ball is not None or (layer_params is not None and layer_density < 1.0)) else 0
    if ramp > epochs:
        raise ValueError(f"l0_ramp ({ramp}) must be at most epochs ({epochs}): the best epoch is "
                         "picked at the final budget")
    first_counted = max(0, ramp - 1)  # the first step projected to the final budget
    t0 = time.perf_counter()
    epoch_iter = range(epochs)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(epoch_iter, desc=desc, unit="ep", leave=False)
        epoch_iter = bar
    # Models with ``forward_shared`` (GCN, GIN) return the eval-mode logits of the current
    # weights from the training forward itself: the validation pass of step t is taken from the
    # forward of step t+1 (the same weights, the same numbers), and one last eval follows the loop.
    shared = forward is None and hasattr(model, "forward_shared")
    if forward is None:
        def forward():
            return model(x, edge_index, edge_weight)

    def record(epoch: int, out: Tensor, keep) -> None:
        nonlocal best_val, best_res, last_out
        last_out = out
        if epoch < first_counted:  # still ramping: not yet the level's sparsity
            return
        val_acc = accuracy(out, y, data.val_mask)
        if val_acc >= best_val:  # ties: the later epoch, as in the TEDDY/UGS code
            best_val = val_acc
            best_res = (val_acc, accuracy(out, y, data.test_mask), epoch, out, keep,
                        snapshot() if snapshot is not None else None)
            if bar is not None:
                bar.set_postfix(val=f"{val_acc:.3f}", test=f"{best_res[1]:.3f}")

    pending = None  # (epoch, keep) of the step whose validation pass is still to come
    try:
        for epoch in epoch_iter:
            model.train()
            optimizer.zero_grad(set_to_none=True)
            if shared:
                logits, prev_eval = model.forward_shared(x, edge_index, edge_weight)
                if pending is not None:
                    record(pending[0], prev_eval, pending[1])
            else:
                logits = forward()
            loss = F.cross_entropy(logits[train_mask], y[train_mask])
            if use_kd:
                loss = loss + kd_lambda * distillation_loss(logits, teacher_logits, temperature)
            if regularizer is not None:
                loss = loss + regularizer()
            loss.backward()
            optimizer.step()
            keep_flat = None
            if ball is not None:
                if ramp:
                    ball.keep = ramp_keep(n_ball, l0_keep, epoch, ramp)
                keep_flat = ball.project()
            elif layer_params is not None and layer_density < 1.0:
                density = (ramp_keep(n_ball, l0_keep, epoch, ramp) / n_ball if ramp
                           else layer_density)
                current_mask = l0_project(layer_params, density, "layer")
                apply_mask(layer_params, current_mask)
            if step_callback is not None:
                if keep_flat is not None:
                    current_mask = flat.to_mask(keep_flat)
                step_callback(epoch, current_mask)
            # the keep vector is a fresh tensor every step; a Mask is built once, at the end
            keep = keep_flat if keep_flat is not None else current_mask
            if shared:
                pending = (epoch, keep)
            else:
                model.eval()
                with torch.no_grad():
                    record(epoch, forward(), keep)
        if pending is not None:
            model.eval()
            with torch.no_grad():
                record(pending[0], forward(), pending[1])
    finally:
        if enforcer is not None:
            enforcer.remove()
        if bar is not None:
            bar.close()
    assert best_res is not None, "epochs must be >= 1"
    val_acc, test_acc, epoch, out, mask, state = best_res
    if isinstance(mask, Tensor):
        mask = flat.to_mask(mask)
    elif isinstance(mask, Mask):
        mask = mask.clone()
    elif mask is None and flat is not None:  # keep >= everything: nothing was ever pruned
        mask = flat.to_mask(torch.ones(flat.numel, dtype=torch.bool))
    return TrainResult(val_accuracy=val_acc, test_accuracy=test_acc, best_epoch=epoch, logits=out,
                       mask=mask, seconds=time.perf_counter() - t0, state=state,
                       last_logits=last_out)
