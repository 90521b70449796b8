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

**Round state** (:meth:`UGS.state_tensors` / :meth:`UGS.restore`, files by :func:`save_state` /
:func:`load_state`): round r+1 depends only on θ0, the seed and the masks alive after round r
(each mask phase seeds its own generator and torch with ``seed * 1000 + r``; the retraining
re-seeds with the run's seed), so those masks are all a rerun needs to continue bit for bit. They
are kept as the round at which each pair and each weight was pruned (0: still alive), one int16
per entry: the masks after *every* round done can be read back from that one file, so a rerun can
also retrain a lower level it skipped before without a single mask phase.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.func import functional_call
from torch_geometric.data import Data

from fedticket.core import Mask, mask_from_scores, prunable_parameters
from graph.edges import EdgeRanking, UndirectedPairs, pair_to_edge
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
        # the round each entry was pruned in (0: alive): every round's masks, for save/restore
        self.rounds_done = 0
        self.round_seconds: list[float] = []
        self.pair_pruned_at = torch.zeros(upairs.num_pairs, dtype=torch.int16)
        self.weight_pruned_at = {n: torch.zeros(m.shape, dtype=torch.int16)
                                 for n, m in self.weight_mask.items()}
        if len(levels) > torch.iinfo(torch.int16).max:
            raise ValueError(f"{len(levels)} levels: UGS's round state counts rounds in int16")

    def target_counts(self, r: int) -> tuple[int, int]:
        """(edges, weights) alive after round ``r`` (1-based): level r's counts."""
        lv = self.levels[r - 1]
        if lv.num_pairs != self.upairs.num_pairs or lv.num_weights != self.weight_mask.numel:
            raise ValueError(f"level {lv.level} was made for {lv.num_pairs} edges and "
                             f"{lv.num_weights} weights, this graph and model have "
                             f"{self.upairs.num_pairs} and {self.weight_mask.numel}")
        return lv.edges_kept, lv.weights_kept

    def run_round(self, r: int) -> UGSRound:
        """Round ``r``: the next one (rounds build on each other, so they run in order)."""
        if r != self.rounds_done + 1:
            raise ValueError(f"UGS round {r} cannot follow round {self.rounds_done}: "
                             "rounds run in order (at_round() reads back those done)")
        t0 = time.perf_counter()
        m_g, m_w = self._mask_phase(r)
        edges_target, weights_target = self.target_counts(r)
        # edges: lowest |m_g| among the alive pairs go; pruned pairs score -inf
        pair_scores = torch.where(self.pair_keep, m_g.abs().double(),
                                  torch.full_like(m_g, float("-inf"), dtype=torch.float64))
        rank = EdgeRanking.from_scores(self.upairs, pair_scores).rank
        before_pairs, before_weights = self.pair_keep, self.weight_mask
        self.pair_keep = rank < min(edges_target, int(self.pair_keep.sum()))
        # weights: core's exact-count selection; entries pruned before stay pruned (base)
        density = weights_target / self.weight_mask.numel
        self.weight_mask = mask_from_scores({n: m_w[n].abs() for n in self.names}, density,
                                            "global", base=self.weight_mask)
        self.pair_pruned_at[(before_pairs & ~self.pair_keep).cpu()] = r
        for n, m in self.weight_mask.items():
            self.weight_pruned_at[n][(before_weights[n] & ~m).cpu()] = r
        secs = time.perf_counter() - t0
        self.rounds_done = r
        self.round_seconds.append(secs)
        return UGSRound(r, self.pair_keep.clone(), self.weight_mask.clone(), secs)

    def at_round(self, r: int) -> UGSRound:
        """The masks alive after round ``r`` (1 <= r <= rounds done), read from the pruning
        record; ``seconds`` is what that round took when it ran (maybe in an earlier process)."""
        if not 1 <= r <= self.rounds_done:
            raise ValueError(f"round {r} is not done (rounds done: {self.rounds_done})")
        dev = self.edge_index.device

        def alive(at: Tensor) -> Tensor:
            return (at == 0) | (at > r)

        mask = Mask({n: alive(at) for n, at in self.weight_pruned_at.items()})
        return UGSRound(r, alive(self.pair_pruned_at).to(dev), mask, self.round_seconds[r - 1])

    # -- round state on disk -------------------------------------------------------------------

    def state_tensors(self) -> dict[str, Tensor]:
        """What a rerun needs to continue after the rounds done (see the module docstring)."""
        out = {"pair_pruned_at": self.pair_pruned_at,
               "round_seconds": torch.tensor(self.round_seconds, dtype=torch.float64)}
        out.update({f"weight/{n}": at for n, at in self.weight_pruned_at.items()})
        return out

    def restore(self, tensors: dict[str, Tensor], rounds: int) -> None:
        """Continue after ``rounds`` rounds recorded in ``tensors`` (:meth:`state_tensors`).

        Checked before anything changes: the names, dtypes and shapes, that every entry was
        pruned in a round 0..rounds, and that after every round the alive counts are that
        level's exact counts. ValueError names the first mismatch.
        """
        if not 1 <= rounds <= len(self.levels):
            raise ValueError(f"{rounds} rounds recorded, the schedule has {len(self.levels)} levels")
        want = {"pair_pruned_at": ((self.upairs.num_pairs,), torch.int16),
                "round_seconds": ((rounds,), torch.float64)}
        want.update({f"weight/{n}": (tuple(at.shape), torch.int16)
                     for n, at in self.weight_pruned_at.items()})
        if set(tensors) != set(want):
            missing, extra = sorted(set(want) - set(tensors)), sorted(set(tensors) - set(want))
            raise ValueError(f"tensors do not match this model and graph (missing {missing[:3]}, "
                             f"unexpected {extra[:3]})")
        for k, (shape, dtype) in want.items():
            t = tensors[k]
            if tuple(t.shape) != shape or t.dtype != dtype:
                raise ValueError(f"{k} is {t.dtype} {tuple(t.shape)}, expected {dtype} {shape}")
        rec = {k: v for k, v in tensors.items() if k != "round_seconds"}
        for k, t in rec.items():
            if t.numel() and (int(t.min()) < 0 or int(t.max()) > rounds):
                raise ValueError(f"{k} holds a round outside 0..{rounds}")
        for r in range(1, rounds + 1):
            edges, weights = self.target_counts(r)
            pairs = int(((tensors["pair_pruned_at"] == 0) | (tensors["pair_pruned_at"] > r)).sum())
            kept = sum(int(((t == 0) | (t > r)).sum()) for k, t in rec.items() if k != "pair_pruned_at")
            if (pairs, kept) != (edges, weights):
                raise ValueError(f"after round {r} it keeps {pairs} edges and {kept} weights, "
                                 f"level {r} keeps {edges} and {weights}")
        self.pair_pruned_at = tensors["pair_pruned_at"].clone()
        self.weight_pruned_at = {n: tensors[f"weight/{n}"].clone() for n in self.weight_pruned_at}
        self.round_seconds = [float(v) for v in tensors["round_seconds"]]
        self.rounds_done = rounds
        last = self.at_round(rounds)
        self.pair_keep, self.weight_mask = last.pair_keep, last.weight_mask

    def _mask_phase(self, r: int) -> tuple[Tensor, dict[str, Tensor]]:
        """Joint weight + mask training from θ0 through the one training loop
        (:func:`graph.train.train_node_classifier`); returns the masks of its best epoch."""
        model, data = self.model, self.data
        model.load_state_dict(self.init_state)
        gen = torch.Generator().manual_seed(self.seed * 1000 + r)
        dev = self.edge_index.device
        ei, kept = edge_index_for(self.upairs, self.edge_index, self.pair_keep)
        m_g = nn.Parameter((1.0 + self.noise * torch.rand(self.upairs.num_pairs, generator=gen)).to(dev))
        params = dict(model.named_parameters())
        fixed = {n: self.weight_mask[n].to(dev, params[n].dtype) for n in self.names}
        m_w = {n: nn.Parameter((1.0 + self.noise * torch.rand(params[n].shape, generator=gen))
                               .to(dev, params[n].dtype)) for n in self.names}
        with torch.no_grad():
            for n in self.names:
                params[n].mul_(fixed[n])

        def forward():
            # each kept edge weighs its pair's m_g (self-loops 1), through the one pair -> edge
            # mapping; the gradient reaches m_g summed over both directions
            ew = pair_to_edge(self.upairs, m_g, 1.0)[kept]
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


STATE_FORMAT = "fedticket.ugs_rounds/1"


def save_state(path: str | Path, ugs: UGS, fingerprint: str, seed: int) -> Path:
    """Write ``ugs``'s round state atomically (a checksummed safetensors file: tensors and
    strings only, nothing is unpickled on load)."""
    from fedticket.core import tensorfile
    from fedticket.results import atomic_write_bytes

    meta = {"format": STATE_FORMAT, "fingerprint": fingerprint, "seed": str(seed),
            "rounds": str(ugs.rounds_done)}
    return atomic_write_bytes(path, tensorfile.dumps(ugs.state_tensors(), meta))


def load_state(path: str | Path, ugs: UGS, fingerprint: str, seed: int) -> int:
    """Restore ``ugs`` from ``path``; the rounds restored. ValueError (one line, naming the file)
    when the file is unreadable, damaged, of another format, run, seed, graph or model; then
    ``ugs`` is unchanged."""
    from fedticket.core import tensorfile

    path = Path(path)
    tensors, meta = tensorfile.loads(path.read_bytes(), str(path))
    if meta.get("format") != STATE_FORMAT:
        raise ValueError(f"{path} is not a UGS round state ({meta.get('format')!r})")
    if meta.get("seed") != str(seed):
        raise ValueError(f"{path} is seed {meta.get('seed')}'s state, not seed {seed}'s")
    if meta.get("fingerprint") != fingerprint:
        raise ValueError(f"{path} was written by another config or graph (fingerprint "
                         f"{meta.get('fingerprint')}, this run {fingerprint})")
    try:
        rounds = int(meta.get("rounds", ""))
        ugs.restore(tensors, rounds)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    return rounds


__all__ = ["STATE_FORMAT", "UGS", "UGSRound", "edge_index_for", "load_state", "save_state"]
