"""Edge sparsification as plain functions and as PyG transforms.

Functions in the style of PyG's ``dropout_edge`` (``edge_index`` in, ``(edge_index, edge_mask)``
out, nothing else touched)::

    from graph.transforms import teddy_sparsify_edges, random_sparsify_edges
    edge_index, edge_mask = teddy_sparsify_edges(data.edge_index, 0.3, data.num_nodes)
    edge_weight = edge_weight[edge_mask]

Transforms, thin wrappers that apply the function to every edge store of a ``Data`` or a
``HeteroData`` and filter each store's edge attributes with its edges::

    from graph.transforms import TeddyEdgeSparsify
    data = TeddyEdgeSparsify(sparsity=0.3)(data)           # 30% of undirected edges removed
    dataset = Planetoid(root, "Cora", transform=TeddyEdgeSparsify(0.3))

Guarantees (shared by every function and transform here):

* exactly ``round(sparsity * M)`` of the ``M`` undirected edges are removed (half rounds up);
* both directions of an undirected edge go together, so an undirected input stays exactly
  symmetric, even when scores tie (ties are broken by the pair ``(min, max)``, never by direction);
* self-loops are kept; isolated nodes are left alone (the node set never changes);
* nested: for the same graph (and, for random, the same seed), the edges kept at a higher sparsity
  are a subset of those kept at a lower one;
* every edge-level attribute (``edge_attr``, ``edge_weight``, ...) is filtered with the edges;
* O(|E|) memory: a handful of ``E``-long integer tensors, nothing ``N x N``.

``HeteroData``: every edge type is sparsified on its own at the same ``sparsity``. An edge type
whose two ends are the same node type is treated like a homogeneous graph. An edge type between
two node types (bipartite) has no self-loops and no folding of ``u -> v`` with ``v -> u``: each
distinct ``(src, dst)`` is one pair, TEDDY degrees are counted per side within that edge type
(:mod:`graph.scores`), and pairs are ordered with the node type of the smaller name first, so a
relation and its mirrored reverse relation (``T.ToUndirected()``) keep mirrored edge sets.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch_geometric.data import Data, HeteroData
from torch_geometric.transforms import BaseTransform

from graph.edges import (
    EdgeRanking,
    UndirectedPairs,
    bipartite_pairs,
    check_sparsity,
    undirected_pairs,
)
from graph.scores import teddy_pair_scores


def teddy_ranking(upairs: UndirectedPairs) -> EdgeRanking:
    """Best-first order of the pairs by TEDDY score (computed once, reused for every level)."""
    return EdgeRanking.from_scores(upairs, teddy_pair_scores(upairs))


def random_ranking(upairs: UndirectedPairs, seed: int) -> EdgeRanking:
    """A uniformly random order of the pairs, from ``seed`` alone."""
    gen = torch.Generator().manual_seed(int(seed))
    order = torch.randperm(upairs.num_pairs, generator=gen).to(upairs.pairs.device)
    return EdgeRanking(upairs, order)


def _pairs(edge_index: Tensor, num_nodes: int | None, size, dst_major: bool) -> UndirectedPairs:
    if size is not None:
        return bipartite_pairs(edge_index, size, dst_major=dst_major)
    return undirected_pairs(edge_index, num_nodes)


def _apply(edge_index: Tensor, ranking: EdgeRanking, sparsity: float) -> tuple[Tensor, Tensor]:
    mask = ranking.keep_mask(sparsity)
    return edge_index[:, mask], mask


def teddy_sparsify_edges(edge_index: Tensor, sparsity: float, num_nodes: int | None = None, *,
                         size: tuple[int, int] | None = None, dst_major: bool = False
                         ) -> tuple[Tensor, Tensor]:
    """Remove the ``sparsity`` fraction of undirected edges with the lowest TEDDY score.

    Args:
        edge_index: ``[2, E]`` integer tensor.
        sparsity: fraction of undirected edges to remove, in ``[0, 1)``.
        num_nodes: number of nodes (default: ``max(edge_index) + 1``).
        size: ``(num_src, num_dst)`` for a bipartite edge type (degrees per side).
        dst_major: bipartite only: break score ties by ``(dst, src)`` instead of ``(src, dst)``.

    Returns:
        ``(edge_index[:, edge_mask], edge_mask)``, the mask a bool ``[E]`` over the input edges.
    """
    s = check_sparsity(sparsity)
    return _apply(edge_index, teddy_ranking(_pairs(edge_index, num_nodes, size, dst_major)), s)


def random_sparsify_edges(edge_index: Tensor, sparsity: float, num_nodes: int | None = None, *,
                          seed: int = 0, size: tuple[int, int] | None = None,
                          dst_major: bool = False) -> tuple[Tensor, Tensor]:
    """Remove a uniformly random ``sparsity`` fraction of undirected edges (order from ``seed``).

    Same arguments and return value as :func:`teddy_sparsify_edges`.
    """
    s = check_sparsity(sparsity)
    upairs = _pairs(edge_index, num_nodes, size, dst_major)
    return _apply(edge_index, random_ranking(upairs, seed), s)


class _RankedEdgeSparsify(BaseTransform):
    """Keep the best ``1 - sparsity`` of the undirected edges of every edge store."""

    def __init__(self, sparsity: float):
        self.sparsity = check_sparsity(sparsity)

    def ranking(self, upairs: UndirectedPairs) -> EdgeRanking:  # pragma: no cover - abstract
        raise NotImplementedError

    def keep_mask(self, edge_index: Tensor, num_nodes: int | None = None, *,
                  size: tuple[int, int] | None = None, dst_major: bool = False) -> Tensor:
        """Bool mask over the directed edges of ``edge_index`` that this transform keeps."""
        upairs = _pairs(edge_index, num_nodes, size, dst_major)
        return self.ranking(upairs).keep_mask(self.sparsity)

    def forward(self, data: Data | HeteroData) -> Data | HeteroData:
        name = type(self).__name__
        stores = data.edge_stores
        for store in stores:  # check every store before changing any
            if "edge_index" not in store:
                where = "" if isinstance(data, Data) else f" (edge type {store._key})"
                if "adj_t" in store:
                    raise ValueError(f"{name} needs data.edge_index{where}; apply it before "
                                     "T.ToSparseTensor() in your Compose")
                raise ValueError(f"{name} needs data.edge_index{where}")
        for store in stores:
            edge_index = store.edge_index
            if isinstance(data, HeteroData):
                src, _, dst = store._key
                n_src, n_dst = store.size()
                if src == dst:
                    keep = self.keep_mask(edge_index, n_src)
                else:
                    keep = self.keep_mask(edge_index, size=(n_src, n_dst), dst_major=src > dst)
            else:
                keep = self.keep_mask(edge_index, data.num_nodes)
            num_edges = edge_index.size(1)
            edge_keys = [k for k, v in store.items()
                         if k != "edge_index" and isinstance(v, Tensor) and store.is_edge_attr(k)
                         and v.dim() > 0 and v.size(0) == num_edges]
            store.edge_index = edge_index[:, keep]
            for k in edge_keys:
                store[k] = store[k][keep]
        return data

    def __repr__(self) -> str:
        return f"{type(self).__name__}(sparsity={self.sparsity})"


class TeddyEdgeSparsify(_RankedEdgeSparsify):
    """TEDDY one-shot edge sparsification: remove the lowest-scoring undirected edges.

    The score (see :mod:`graph.scores`) depends on degrees only, so it is computed in O(|E|) from
    the structure, before any training. Hub–hub edges go first. Works on ``Data`` and on every
    edge type of a ``HeteroData`` (see the module docstring for bipartite edge types).

    Args:
        sparsity: fraction of undirected edges to remove, in ``[0, 1)``.
    """

    def ranking(self, upairs: UndirectedPairs) -> EdgeRanking:
        return teddy_ranking(upairs)


class RandomEdgeSparsify(_RankedEdgeSparsify):
    """Remove a uniformly random ``sparsity`` fraction of undirected edges (the random baseline).

    The random order over pairs comes from ``seed`` alone, so calls with the same seed on the same
    graph are reproducible and nested across sparsities. In a ``HeteroData`` every edge type uses
    the same seed.

    Args:
        sparsity: fraction of undirected edges to remove, in ``[0, 1)``.
        seed: seed of the random order.
    """

    def __init__(self, sparsity: float, seed: int = 0):
        super().__init__(sparsity)
        self.seed = int(seed)

    def ranking(self, upairs: UndirectedPairs) -> EdgeRanking:
        return random_ranking(upairs, self.seed)

    def __repr__(self) -> str:
        return f"RandomEdgeSparsify(sparsity={self.sparsity}, seed={self.seed})"
