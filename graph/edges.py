"""Undirected edge bookkeeping shared by every edge sparsifier (TEDDY, random, UGS).

PyG stores an undirected graph as two directed edges per undirected edge. Every sparsifier here
decides per *undirected pair* {u, v} (never per direction), so both directions are kept or dropped
together and the result is exactly symmetric, even when scores tie. Self-loops are not pairs: they
are never pruned.

The pieces:

* :func:`undirected_pairs` maps each directed edge to the id of its pair ``(min, max)``
  (:func:`bipartite_pairs` does the same for an edge type between two node sets);
* :func:`pair_to_edge` is the one way back: a value per pair (a keep flag, a score) spread onto
  the directed edges, self-loops filled with a given value. Everything that turns a per-pair
  decision into an ``edge_index`` goes through it, so the mapping exists exactly once;
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
            For a bipartite edge type (``size`` set) ``u`` indexes the source node set and ``v``
            the destination set; see :func:`bipartite_pairs` for their order.
        pair_id: ``[E]`` index into ``pairs`` for each directed edge, ``-1`` for self-loops.
        num_nodes: number of nodes (of a square graph; for a bipartite one, ``max(size)``).
        size: ``(num_src, num_dst)`` for a bipartite edge type, ``None`` for a square graph.
    """

    pairs: Tensor
    pair_id: Tensor
    num_nodes: int
    size: tuple[int, int] | None = None

    @property
    def num_pairs(self) -> int:
        return int(self.pairs.size(1))

    @property
    def is_loop(self) -> Tensor:
        return self.pair_id < 0

    def degree(self) -> Tensor:
        """Number of distinct neighbours of each node (self-loops and duplicates not counted)."""
        if self.size is not None:
            raise ValueError("a bipartite edge type has one degree per side: use side_degrees()")
        deg = torch.bincount(self.pairs[0], minlength=self.num_nodes)
        return deg + torch.bincount(self.pairs[1], minlength=self.num_nodes)

    def side_degrees(self) -> tuple[Tensor, Tensor]:
        """Bipartite: distinct destination neighbours of each source node, and vice versa."""
        if self.size is None:
            raise ValueError("side_degrees() is for bipartite edge types; use degree()")
        return (torch.bincount(self.pairs[0], minlength=self.size[0]),
                torch.bincount(self.pairs[1], minlength=self.size[1]))

    def edge_mask(self, pair_keep: Tensor) -> Tensor:
        """Bool ``[E]``: directed edges whose pair is kept; self-loops are always kept."""
        return pair_to_edge(self, pair_keep, True)


def pair_to_edge(upairs: UndirectedPairs, pair_values: Tensor, loop_value) -> Tensor:
    """Spread one value per undirected pair onto the directed edges (``[M] -> [E]``).

    Both directions of a pair (and duplicates) get the identical value, which is what keeps every
    sparsifier exactly symmetric; self-loops, which are no pair, get ``loop_value``.
    """
    if pair_values.numel() != upairs.num_pairs:
        raise ValueError(f"{pair_values.numel()} pair values for {upairs.num_pairs} pairs")
    pid = upairs.pair_id
    if upairs.num_pairs == 0:  # nothing to gather from: every edge (if any) is a loop
        return torch.full((pid.numel(),), loop_value, dtype=pair_values.dtype, device=pid.device)
    # clamp + where instead of boolean indexing: two E-sized passes, no E-sized index copy
    out = pair_values[pid.clamp(min=0)]
    if pid.numel() and bool((pid < 0).any()):
        out = torch.where(pid >= 0, out, torch.as_tensor(loop_value, dtype=out.dtype,
                                                         device=out.device))
    return out


def _check_edge_index(edge_index: Tensor) -> Tensor:
    if edge_index.dim() != 2 or edge_index.size(0) != 2:
        raise ValueError(f"edge_index must have shape [2, E], got {tuple(edge_index.shape)}")
    if edge_index.is_floating_point():
        raise ValueError(f"edge_index must hold integer node ids, got {edge_index.dtype}")
    if edge_index.numel() and int(edge_index.min()) < 0:
        raise ValueError(f"edge_index holds a negative node id ({int(edge_index.min())}); "
                         "node ids count from 0")
    return edge_index.long()


def _group(key: Tensor, valid: Tensor | None) -> tuple[Tensor, Tensor]:
    """Unique sorted keys and, per edge, the index of its key (``-1`` where not ``valid``).

    One sort of an int64 key, the only step that is not a single pass (it grows close to
    linearly here: docs/graph_scale.md); ``valid=None`` means every edge is a pair (no loops).
    """
    if valid is None:
        return torch.unique(key, sorted=True, return_inverse=True)
    pair_id = torch.full_like(key, -1)
    uniq, inv = torch.unique(key[valid], sorted=True, return_inverse=True)
    pair_id[valid] = inv
    return uniq, pair_id


def undirected_pairs(edge_index: Tensor, num_nodes: int | None = None) -> UndirectedPairs:
    """Group directed edges into undirected pairs with one sort (no N x N matrix).

    A directed edge without its reverse still forms a pair; duplicated edges share their pair.
    """
    edge_index = _check_edge_index(edge_index)
    if num_nodes is None:
        num_nodes = int(edge_index.max()) + 1 if edge_index.numel() else 0
    if edge_index.numel() and int(edge_index.max()) >= num_nodes:
        raise ValueError(f"edge_index refers to node {int(edge_index.max())} but num_nodes is "
                         f"{num_nodes}; pass the graph's num_nodes")
    row, col = edge_index
    lo, hi = torch.minimum(row, col), torch.maximum(row, col)
    n = max(num_nodes, 1)
    key = lo * n + hi
    del lo
    loop = row == col
    uniq, pair_id = _group(key, ~loop if bool(loop.any()) else None)
    pairs = torch.stack([uniq // n, uniq % n])
    return UndirectedPairs(pairs=pairs, pair_id=pair_id, num_nodes=num_nodes)


def bipartite_pairs(edge_index: Tensor, size: tuple[int, int],
                    dst_major: bool = False) -> UndirectedPairs:
    """Pairs of an edge type between two node sets: each distinct ``(src, dst)`` is one pair.

    There are no self-loops and no ``(min, max)`` folding here (node ``3`` of one set is not node
    ``3`` of the other); the reverse direction lives in another edge type. ``pairs`` are sorted
    by ``(src, dst)``, or by ``(dst, src)`` with ``dst_major``: a type and its mirrored reverse
    type, each sorted with the set of the smaller type name first, then order their pairs
    identically, so ties between equal scores are broken the same way in both.
    """
    edge_index = _check_edge_index(edge_index)
    n_src, n_dst = int(size[0]), int(size[1])
    if edge_index.numel() and (int(edge_index[0].max()) >= n_src or
                               int(edge_index[1].max()) >= n_dst):
        raise ValueError(f"edge_index refers to nodes beyond size {(n_src, n_dst)}")
    src, dst = edge_index
    key = dst * max(n_src, 1) + src if dst_major else src * max(n_dst, 1) + dst
    uniq, pair_id = _group(key, None)
    if dst_major:
        pairs = torch.stack([uniq % max(n_src, 1), uniq // max(n_src, 1)])
    else:
        pairs = torch.stack([uniq // max(n_dst, 1), uniq % max(n_dst, 1)])
    return UndirectedPairs(pairs=pairs, pair_id=pair_id, num_nodes=max(n_src, n_dst),
                           size=(n_src, n_dst))


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
        return self.upairs.edge_mask(self.pair_keep_mask(sparsity))

    def keep_top(self, num_kept: int) -> Tensor:
        """Bool ``[E]``: the edges of the ``num_kept`` best pairs (a :class:`graph.levels.Level`'s
        ``edges_kept``, so a sweep reads its count from the level instead of recomputing it)."""
        if not 0 <= num_kept <= self.num_pairs:
            raise ValueError(f"cannot keep {num_kept} of {self.num_pairs} pairs")
        return self.upairs.edge_mask(self.rank < num_kept)
