"""Essential sparsity (Jaiswal et al., "The Emergence of Essential Sparsity in Large Pre-trained
Models", NeurIPS 2023): one-shot magnitude pruning of a *trained* model over a density sweep,
without any retraining, and the point where accuracy drops sharply.

**Sharp-drop point** (our definition, the paper's "essential sparsity" made exact): going from
dense towards sparser masks, the largest sparsity reached before the first level whose accuracy
falls ``tolerance`` or more (default 0.01 = 1 point) below the dense accuracy. Levels past a first
failure never count, so a noisy recovery at higher sparsity cannot move the point. N:M patterns
are evaluated the same way and reported with their drop and a pass/fail against the tolerance.
"""

from __future__ import annotations

import copy
from typing import Callable, Sequence

from torch import nn

from fedticket.core.apply import apply_mask
from fedticket.core.nm import nm_mask_from_scores
from fedticket.core.prune import l0_project
from fedticket.core.selection import prunable_parameters


def sharp_drop_point(dense_accuracy: float, sweep: Sequence[dict], tolerance: float = 0.01) -> dict | None:
    """The sweep row (``{"sparsity", "accuracy", ...}``) at the sharp-drop point, or None when even
    the least sparse level drops by ``tolerance`` or more."""
    best = None
    for row in sorted(sweep, key=lambda r: r["sparsity"]):
        if dense_accuracy - row["accuracy"] >= tolerance:
            break
        best = row
    return best


def essential_sparsity(model: nn.Module, evaluate: Callable[[nn.Module], float],
                       densities: Sequence[float], *, nm_patterns: Sequence[tuple[int, int]] = (),
                       scope: str = "global", tolerance: float = 0.01, include=None, exclude=None,
                       min_ndim: int = 2) -> dict:
    """Evaluate one-shot magnitude masks of a trained ``model`` (left untouched) at ``densities``
    (and ``nm_patterns``), with ``evaluate(model) -> accuracy``; returns the sweep and the
    sharp-drop point."""
    if not 0.0 < tolerance < 1.0:
        raise ValueError(f"tolerance must be in (0, 1), got {tolerance}")
    params = prunable_parameters(model, include, exclude, min_ndim)
    dense = float(evaluate(model))

    def pruned_accuracy(mask) -> float:
        net = copy.deepcopy(model)
        apply_mask(net, mask)
        return float(evaluate(net))

    sweep = []
    for d in sorted(set(float(x) for x in densities), reverse=True):
        mask = l0_project(params, d, scope)
        acc = pruned_accuracy(mask)
        sweep.append({"density": mask.density, "sparsity": mask.sparsity, "accuracy": acc,
                      "drop": dense - acc})
    nm_rows = []
    for n, m in nm_patterns:
        mask = nm_mask_from_scores({k: p.detach().abs() for k, p in params.items()}, n, m)
        acc = pruned_accuracy(mask)
        nm_rows.append({"pattern": f"{n}:{m}", "density": mask.density, "accuracy": acc,
                        "drop": dense - acc, "within_tolerance": dense - acc < tolerance})
    point = sharp_drop_point(dense, sweep, tolerance)
    return {"dense_accuracy": dense, "tolerance": tolerance, "scope": scope, "sweep": sweep,
            "essential_sparsity": point["sparsity"] if point else 0.0,
            "essential_point": point, "nm": nm_rows}
