"""Edge sparsification as PyG transforms: drop them into any PyG pipeline.

    from graph.transforms import TeddyEdgeSparsify
    data = TeddyEdgeSparsify(sparsity=0.3)(data)           # 30% of undirected edges removed
    dataset = Planetoid(root, "Cora", transform=TeddyEdgeSparsify(0.3))

Guarantees (shared by :class:`TeddyEdgeSparsify` and :class:`RandomEdgeSparsify`):

* exactly ``round(sparsity * M)`` of the ``M`` undirected edges are removed (half rounds up);
* both directions of an undirected edge go together, so an undirected input stays exactly
  symmetric, even when scores tie (ties are broken by the pair ``(min, max)``, never by direction);
* self-loops are kept; isolated nodes are left alone (the node set never changes);
* nested: for the same graph (and, for random, the same seed), the edges kept at a higher sparsity
  are a subset of those kept at a lower one;
* every edge-level attribute (``edge_attr``, ``edge_weight``, ...) is filtered with the edges.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch_geometric.data import Data, HeteroData
from torch_geometric.transforms import BaseTransform

from graph.edges import EdgeRanking, UndirectedPairs, check_sparsity, undirected_pairs
from graph.scores import teddy_pair_scores


class _RankedEdgeSparsify(BaseTransform):
    """Keep the best ``1 - sparsity`` of the undirected edges under a ranking of the pairs."""

    def __init__(self, sparsity: float):
        self.sparsity = check_sparsity(sparsity)

    def ranking(self, upairs: UndirectedPairs) -> EdgeRanking:  # pragma: no cover - abstract
        raise NotImplementedError

    def keep_mask(self, edge_index: Tensor, num_nodes: int) -> Tensor:
        """Bool mask over the directed edges of ``edge_index`` that this transform keeps."""
        return self.ranking(undirected_pairs(edge_index, num_nodes)).keep_mask(self.sparsity)

    def forward(self, data: Data) -> Data:
        if isinstance(data, HeteroData):
            raise TypeError(f"{type(self).__name__} works on homogeneous graphs (Data); "
                            "apply it to data.to_homogeneous() or per edge type yourself")
        if "edge_index" not in data:
            if "adj_t" in data:
                raise ValueError(f"{type(self).__name__} needs data.edge_index; apply it before "
                                 "T.ToSparseTensor() in your Compose")
            raise ValueError(f"{type(self).__name__} needs data.edge_index")
        edge_index = data.edge_index
        num_edges = edge_index.size(1)
        keep = self.keep_mask(edge_index, data.num_nodes)
        edge_keys = [k for k, v in data.items()
                     if k != "edge_index" and isinstance(v, Tensor) and data.is_edge_attr(k)
                     and v.size(0) == num_edges]
        data.edge_index = edge_index[:, keep]
        for k in edge_keys:
            data[k] = data[k][keep]
        return data

    def __repr__(self) -> str:
        return f"{type(self).__name__}(sparsity={self.sparsity})"


class TeddyEdgeSparsify(_RankedEdgeSparsify):
    """TEDDY one-shot edge sparsification: remove the lowest-scoring undirected edges.

    The score (see :mod:`graph.scores`) depends on degrees only, so it is computed in O(|E|) from
    the structure, before any training. Hub–hub edges go first.

    Args:
        sparsity: fraction of undirected edges to remove, in ``[0, 1)``.
    """

    def ranking(self, upairs: UndirectedPairs) -> EdgeRanking:
        return EdgeRanking.from_scores(upairs, teddy_pair_scores(upairs))


class RandomEdgeSparsify(_RankedEdgeSparsify):
    """Remove a uniformly random ``sparsity`` fraction of undirected edges (the random baseline).

    The random order over pairs comes from ``seed`` alone, so calls with the same seed on the same
    graph are reproducible and nested across sparsities.

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


def teddy_ranking(upairs: UndirectedPairs) -> EdgeRanking:
    return EdgeRanking.from_scores(upairs, teddy_pair_scores(upairs))


def random_ranking(upairs: UndirectedPairs, seed: int) -> EdgeRanking:
    gen = torch.Generator().manual_seed(int(seed))
    order = torch.randperm(upairs.num_pairs, generator=gen).to(upairs.pairs.device)
    return EdgeRanking(upairs, order)
