"""UGS (Chen et al., ICML 2021): the iterative graph lottery ticket baseline.

Each *round* r = 1, 2, ...:

1. **Mask phase**: from the rewound weights θ0, train jointly the weights, a learnable per-edge
   mask ``m_g`` (one value per undirected edge, so pruning stays symmetric) and a learnable mask
   ``m_w`` per weight tensor, with loss CE + λ_g‖m_g‖₁ + λ_w‖m_w‖₁, for ``mask_epochs`` epochs.
   The effective weight is ``w ⊙ m_w ⊙ fixed_w``; the effective edge is the normalised adjacency
   entry times ``m_g``. The masks of the best-validation epoch are kept.
2. **Prune** the lowest-``|m|`` edges and weights among those still alive, down to the schedule's
   counts: level r keeps exactly the edges and weights of :class:`graph.levels.Level` r, the counts
   TEDDY and random keep there, so the comparison is at equal sparsity and the densities match
   the schedule exactly instead of drifting by rounding.
3. **Retrain**: rewind the weights to θ0, train with the now fixed masks (edges removed, weights
   held at zero by core's ``MaskEnforcer``) and report test accuracy at the best validation epoch.

Level k therefore costs k mask phases plus one retraining, which is what the benchmark compares
with TEDDY's single run per level.

Weight masks use core's ``Mask`` and ``mask_from_scores`` (global scope, exact counts, ties by
index); the soft masks are applied through ``torch.func.functional_call`` so the model's own
parameters and state_dict keys never change.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import functional_call
from torch_geometric.data import Data

from fedticket.core import Mask, mask_from_scores, prunable_parameters
from graph.edges import EdgeRanking, UndirectedPairs
from graph.levels import Level
from graph.train import train_node_classifier


@dataclass
class UGSRound:
    round: int
    pair_keep: Tensor  # bool [M]: undirected edges alive after this round
    weight_mask: Mask  # weights alive after this round
    seconds: float  # wall time of this round's mask phase + pruning


def edge_index_for(upairs: UndirectedPairs, edge_index: Tensor, pair_keep: Tensor) -> Tensor:
    """Directed edges whose pair is alive (self-loops always kept)."""
    keep = upairs.edge_mask(pair_keep)  # the one pair -> edge mapping (graph.edges)
    return edge_index[:, keep], keep


class UGS:
    """Iterative UGS rounds on one graph and one initialisation θ0.

    ``init_state`` is θ0 (the model's state_dict right after construction with the run's seed);
    ``rounds()`` yields one :class:`UGSRound` per pruning round, with exact target counts.
    """

    def __init__(self, model: nn.Module, init_state: dict, x, data: Data, edge_index: Tensor,
                 upairs: UndirectedPairs, *, levels: list[Level], mask_epochs: int = 200, lr: float = 0.01, weight_decay: float = 5e-4,
                 edge_l1: float = 1e-2, weight_l1: float = 1e-2, noise: float = 1e-5, seed: int = 0,
                 progress: bool = False):
        self.model, self.init_state, self.x, self.data = model, init_state, x, data
        self.edge_index, self.upairs = edge_index, upairs
        self.levels = levels
        self.mask_epochs, self.lr, self.weight_decay = mask_epochs, lr, weight_decay
        self.edge_l1, self.weight_l1, self.noise, self.seed = edge_l1, weight_l1, noise, seed
        self.progress = progress
        self.names = list(prunable_parameters(model))
        self.pair_keep = torch.ones(upairs.num_pairs, dtype=torch.bool, device=edge_index.device)
        self.weight_mask = Mask.ones_like(model)

    def target_counts(self, r: int) -> tuple[int, int]:
        """(edges, weights) alive after round ``r`` (1-based): level r's counts."""
        lv = self.levels[r - 1]
        if lv.num_pairs != self.upairs.num_pairs or lv.num_weights != self.weight_mask.numel:
            raise ValueError(f"level {lv.level} was made for {lv.num_pairs} edges and "
                             f"{lv.num_weights} weights, this graph and model have "
                             f"{self.upairs.num_pairs} and {self.weight_mask.numel}")
        return lv.edges_kept, lv.weights_kept

    def run_round(self, r: int) -> UGSRound:
        t0 = time.perf_counter()
        m_g, m_w = self._mask_phase(r)
        edges_target, weights_target = self.target_counts(r)
        # edges: lowest |m_g| among the alive pairs go; pruned pairs score -inf
        pair_scores = torch.where(self.pair_keep, m_g.abs().double(),
                                  torch.full_like(m_g, float("-inf"), dtype=torch.float64))
        rank = EdgeRanking.from_scores(self.upairs, pair_scores).rank
        self.pair_keep = rank < min(edges_target, int(self.pair_keep.sum()))
        # weights: core's exact-count selection; entries pruned before stay pruned (base)
        density = weights_target / self.weight_mask.numel
        self.weight_mask = mask_from_scores({n: m_w[n].abs() for n in self.names}, density,
                                            "global", base=self.weight_mask)
        return UGSRound(r, self.pair_keep.clone(), self.weight_mask.clone(), time.perf_counter() - t0)

    def _mask_phase(self, r: int) -> tuple[Tensor, dict[str, Tensor]]:
        """Joint weight + mask training from θ0 through the one training loop
        (:func:`graph.train.train_node_classifier`); returns the masks of its best epoch."""
        model, data = self.model, self.data
        model.load_state_dict(self.init_state)
        gen = torch.Generator().manual_seed(self.seed * 1000 + r)
        dev = self.edge_index.device
        ei, _ = edge_index_for(self.upairs, self.edge_index, self.pair_keep)
        pid = self.upairs.pair_id
        pid_kept = pid[self.upairs.edge_mask(self.pair_keep)]
        nonloop = pid_kept >= 0
        m_g = nn.Parameter((1.0 + self.noise * torch.rand(self.upairs.num_pairs, generator=gen)).to(dev))
        params = dict(model.named_parameters())
        fixed = {n: self.weight_mask[n].to(dev, params[n].dtype) for n in self.names}
        m_w = {n: nn.Parameter((1.0 + self.noise * torch.rand(params[n].shape, generator=gen))
                               .to(dev, params[n].dtype)) for n in self.names}
        with torch.no_grad():
            for n in self.names:
                params[n].mul_(fixed[n])

        def forward():
            ew = torch.ones(pid_kept.numel(), dtype=m_g.dtype, device=dev)
            ew = ew.masked_scatter(nonloop, m_g[pid_kept[nonloop]]) if bool(nonloop.any()) else ew
            override = {n: params[n] * m_w[n] * fixed[n] for n in self.names}
            return functional_call(model, override, (self.x, ei, ew))

        def l1():
            return (self.edge_l1 * m_g[self.pair_keep].abs().sum()
                    + self.weight_l1 * sum((m_w[n] * fixed[n]).abs().sum() for n in self.names))

        torch.manual_seed(self.seed * 1000 + r)
        res = train_node_classifier(
            model, self.x, data, ei, epochs=self.mask_epochs, lr=self.lr,
            weight_decay=self.weight_decay, forward=forward, regularizer=l1,
            extra_params=[m_g, *m_w.values()],
            snapshot=lambda: (m_g.detach().clone(), {n: v.detach().clone() for n, v in m_w.items()}),
            progress=self.progress, desc=f"ugs round {r} masks")
        return res.state


__all__ = ["UGS", "UGSRound", "edge_index_for"]
