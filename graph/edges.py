"""Undirected edge bookkeeping shared by every edge sparsifier (TEDDY, random, UGS).

PyG stores an undirected graph as two directed edges per undirected edge. Every sparsifier here
decides per *undirected pair* {u, v} (never per direction), so both directions are kept or dropped
together and the result is exactly symmetric, even when scores tie. Self-loops are not pairs: they
are never pruned.

The pieces:

* :func:`undirected_pairs` maps each directed edge to the id of its pair ``(min, max)``;
* :class:`EdgeRanking` holds a total order over pairs (best first) and turns a sparsity into a
  keep-mask over the directed edges. Because the order is fixed, the kept set at a higher sparsity
  is always a subset of the kept set at a lower one (nested levels).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


def check_sparsity(sparsity: float) -> float:
    """Graph sparsity is the fraction of undirected edges removed: 0 <= s < 1."""
    s = float(sparsity)
    if math.isnan(s) or not (0.0 <= s < 1.0):
        raise ValueError(f"graph sparsity must be in [0, 1), got {sparsity!r} "
                         "(0 keeps every edge; 1 would remove them all)")
    return s


def num_removed(sparsity: float, num_pairs: int) -> int:
    """How many undirected edges a sparsity removes: ``floor(s * M + 0.5)``, i.e. round half up
    (Python's ``round`` rounds half to even: 0.5 * 5 edges would remove 2, 0.5 * 3 would remove 2
    too). Unlike core's ``kept_count`` for weights, all edges may go when ``s * M`` rounds to ``M``."""
    s = check_sparsity(sparsity)
    return min(num_pairs, int(math.floor(s * num_pairs + 0.5)))


@dataclass
class UndirectedPairs:
    """The undirected view of an ``edge_index``.

    Attributes:
        pairs: ``[2, M]`` unique pairs ``(u, v)`` with ``u < v``, sorted lexicographically.
        pair_id: ``[E]`` index into ``pairs`` for each directed edge, ``-1`` for self-loops.
        num_nodes: number of nodes.
    """

    pairs: Tensor
    pair_id: Tensor
    num_nodes: int

    @property
    def num_pairs(self) -> int:
        return int(self.pairs.size(1))

    @property
    def is_loop(self) -> Tensor:
        return self.pair_id < 0

    def degree(self) -> Tensor:
        """Number of distinct neighbours of each node (self-loops and duplicates not counted)."""
        deg = torch.zeros(self.num_nodes, dtype=torch.long, device=self.pairs.device)
        ones = torch.ones(self.num_pairs, dtype=torch.long, device=self.pairs.device)
        deg.scatter_add_(0, self.pairs[0], ones)
        deg.scatter_add_(0, self.pairs[1], ones)
        return deg


def undirected_pairs(edge_index: Tensor, num_nodes: int | None = None) -> UndirectedPairs:
    """Group directed edges into undirected pairs in O(E log E) (one sort, no N x N matrix).

    A directed edge without its reverse still forms a pair; duplicated edges share their pair.
    """
    if edge_index.dim() != 2 or edge_index.size(0) != 2:
        raise ValueError(f"edge_index must have shape [2, E], got {tuple(edge_index.shape)}")
    edge_index = edge_index.long()
    if num_nodes is None:
        num_nodes = int(edge_index.max()) + 1 if edge_index.numel() else 0
    row, col = edge_index
    lo, hi = torch.minimum(row, col), torch.maximum(row, col)
    loop = lo == hi
    key = lo * max(num_nodes, 1) + hi
    pair_id = torch.full_like(row, -1)
    uniq, inv = torch.unique(key[~loop], sorted=True, return_inverse=True)
    pair_id[~loop] = inv
    n = max(num_nodes, 1)
    pairs = torch.stack([uniq // n, uniq % n]) if uniq.numel() else \
        torch.zeros(2, 0, dtype=torch.long, device=edge_index.device)
    return UndirectedPairs(pairs=pairs, pair_id=pair_id, num_nodes=num_nodes)


class EdgeRanking:
    """A fixed best-first order over the undirected pairs of one graph.

    ``order[r]`` is the pair at rank ``r`` (rank 0 is kept longest). ``keep_mask(s)`` keeps the
    first ``M - round(s * M)`` pairs, so every sparsity removes an exact count and the kept sets
    are nested across sparsities.
    """

    def __init__(self, upairs: UndirectedPairs, order: Tensor):
        if order.numel() != upairs.num_pairs:
            raise ValueError(f"order has {order.numel()} entries for {upairs.num_pairs} pairs")
        self.upairs = upairs
        self.order = order.long()
        rank = torch.empty_like(self.order)
        rank[self.order] = torch.arange(self.order.numel(), device=self.order.device)
        self.rank = rank  # rank of each pair

    @classmethod
    def from_scores(cls, upairs: UndirectedPairs, pair_scores: Tensor) -> "EdgeRanking":
        """Higher score = kept longer; ties go to the lexicographically smaller pair (stable sort),
        which is what makes the selection deterministic and exactly symmetric."""
        if pair_scores.numel() != upairs.num_pairs:
            raise ValueError("one score per undirected pair is needed")
        s = torch.nan_to_num(pair_scores.double(), nan=-math.inf)
        order = torch.sort(s, descending=True, stable=True).indices
        return cls(upairs, order)

    @property
    def num_pairs(self) -> int:
        return self.upairs.num_pairs

    def num_kept(self, sparsity: float) -> int:
        return self.num_pairs - num_removed(sparsity, self.num_pairs)

    def pair_keep_mask(self, sparsity: float) -> Tensor:
        """Bool ``[M]``: which undirected pairs survive at this sparsity."""
        return self.rank < self.num_kept(sparsity)

    def keep_mask(self, sparsity: float) -> Tensor:
        """Bool ``[E]`` over the directed edges; self-loops are always kept."""
        pk = self.pair_keep_mask(sparsity)
        pid = self.upairs.pair_id
        out = torch.ones(pid.numel(), dtype=torch.bool, device=pid.device)
        nl = pid >= 0
        out[nl] = pk[pid[nl]]
        return out
