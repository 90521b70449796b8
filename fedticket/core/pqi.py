"""PQ Index (PQI) and sparsity-informed adaptive pruning (SAP), after Diao et al., "Pruning Deep
Neural Networks from a Sparsity Perspective" (ICLR 2023).

``pq_index(w, p, q) = 1 - d^(1/q - 1/p) · ‖w‖_p / ‖w‖_q`` over the d entries of ``w``, 0 < p < q
(``‖·‖_p`` for p < 1 is the quasi-norm ``(Σ|w_i|^p)^(1/p)``). By the norm inequality
``‖w‖_p <= d^(1/p - 1/q) ‖w‖_q`` it lies in [0, 1 - d^(1/q - 1/p)]: 0 for a constant vector,
close to 1 for a one-hot one. The larger, the sparser (more compressible) the weights.

SAP prunes, each round, a count set by the PQI of the weights still alive: with d alive weights
and I their PQI, the lower bound on the weights to retain is

    r = d · (1 + η_r)^(-q / (q - p)) · (1 - I)^(q·p / (q - p))

and the round prunes ``c = floor(d · min(γ · (1 - r/d), β))`` weights of smallest magnitude
(Diao et al.'s Algorithm 1 with their defaults p = 0.5, q = 1, η_r = 0, γ = 1, β = 0.9).
"""

from __future__ import annotations

import math
from typing import Mapping

import torch
from torch import nn

from fedticket.core.mask import Mask
from fedticket.core.selection import prunable_parameters


def _check_pq(p: float, q: float) -> tuple[float, float]:
    p, q = float(p), float(q)
    if not 0.0 < p < q:
        raise ValueError(f"PQ Index needs 0 < p < q, got p={p}, q={q}")
    return p, q


def pq_index(w: torch.Tensor, p: float = 1.0, q: float = 2.0) -> float:
    """PQ Index of all entries of ``w`` (0 for a constant or all-zero tensor)."""
    p, q = _check_pq(p, q)
    x = w.detach().reshape(-1).to(torch.float64).abs()
    d = x.numel()
    if d == 0:
        return 0.0
    top = float(x.max())
    if top == 0.0:
        return 0.0
    x = x / top  # scale-free, and keeps Σ|x|^p finite for tiny weights
    norm_p = float(x.pow(p).sum()) ** (1.0 / p)
    norm_q = float(x.pow(q).sum()) ** (1.0 / q)
    return max(0.0, 1.0 - d ** (1.0 / q - 1.0 / p) * norm_p / norm_q)


def _alive(params: Mapping[str, torch.Tensor], mask: Mask | None) -> dict[str, torch.Tensor]:
    out = {}
    for n, w in params.items():
        v = w.detach().reshape(-1).cpu()
        if mask is not None and n in mask:
            v = v[mask[n].reshape(-1).cpu()]
        out[n] = v
    return out


def pq_report(model_or_params: nn.Module | Mapping[str, torch.Tensor], mask: Mask | None = None,
              p: float = 1.0, q: float = 2.0) -> dict:
    """``{"layers": {name: PQI}, "overall": PQI, "p": p, "q": q}`` over the alive weights."""
    params = (prunable_parameters(model_or_params) if isinstance(model_or_params, nn.Module)
              else dict(model_or_params))
    alive = _alive(params, mask)
    allw = torch.cat(list(alive.values())) if alive else torch.zeros(0)
    return {"p": p, "q": q, "layers": {n: pq_index(v, p, q) for n, v in alive.items()},
            "overall": pq_index(allw, p, q)}


def sap_prune_count(d: int, index: float, p: float = 0.5, q: float = 1.0, eta_r: float = 0.0,
                    gamma: float = 1.0, beta: float = 0.9) -> int:
    """How many of ``d`` alive weights with PQ Index ``index`` SAP prunes this round."""
    p, q = _check_pq(p, q)
    if d <= 0:
        return 0
    if not 0.0 < beta < 1.0:
        raise ValueError(f"beta (the per-round cap) must be in (0, 1), got {beta}")
    r = d * (1.0 + eta_r) ** (-q / (q - p)) * (1.0 - index) ** (q * p / (q - p))
    frac = min(max(gamma * (1.0 - r / d), 0.0), beta)
    return int(math.floor(d * frac))


def sap_prune_fraction(model: nn.Module, mask: Mask, level: int = 0, *, p: float = 0.5,
                       q: float = 1.0, eta_r: float = 0.0, gamma: float = 1.0,
                       beta: float = 0.9) -> float:
    """Fraction of ``mask``'s alive weights SAP prunes, from the PQI of the trained ``model``
    (global scope): pass as ``prune_amount`` to :func:`~fedticket.core.imp.iterative_magnitude_pruning`."""
    params = dict(model.named_parameters())
    alive = _alive({n: params[n] for n in mask}, mask)
    allw = torch.cat(list(alive.values()))
    d = allw.numel()
    c = sap_prune_count(d, pq_index(allw, p, q), p, q, eta_r, gamma, beta)
    return c / d if d else 0.0
