"""Disjoint node partitions of one graph for subgraph federated learning (FedSage, FED-PUB).

Each client gets one part; edges between parts are dropped (no client ever sees another
client's nodes). Two partitioners, both seeded so every process derives the same parts:

- ``metis``: METIS k-way (pymetis) on the undirected graph, balanced parts, few cut edges.
- ``louvain``: Louvain communities (networkx's ``louvain_communities``, seeded; chosen over
  PyG's because PyG has none of its own and networkx is already a torch dependency), then the
  communities, largest first, each go to the client holding the fewest nodes so far (the
  assignment FedSage+ uses), since Louvain finds its own number of communities.

Each client splits its own nodes into train / validation / test by a seeded random split
(``train_fraction`` / ``val_fraction``, the rest test): the public Planetoid split puts 20
labelled nodes per class in the whole graph, which leaves many parts with no label of a class.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torch_geometric.utils import subgraph

from graph.edges import undirected_pairs

PARTITIONS = ("metis", "louvain")


def _undirected_pairs(edge_index: Tensor, num_nodes: int) -> np.ndarray:
    # the graph side's one undirected view (graph/edges.py): u < v, no loops, sorted
    return undirected_pairs(edge_index, num_nodes).pairs.numpy()


def metis_parts(edge_index: Tensor, num_nodes: int, k: int, seed: int) -> np.ndarray:
    """Part id (0..k-1) of every node by METIS k-way."""
    import pymetis

    if k == 1:
        return np.zeros(num_nodes, dtype=np.int64)
    pairs = _undirected_pairs(edge_index, num_nodes)
    both = np.concatenate([pairs, pairs[::-1]], axis=1)
    order = np.lexsort((both[1], both[0]))
    src, dst = both[0][order], both[1][order]
    xadj = np.zeros(num_nodes + 1, dtype=np.int64)
    np.add.at(xadj, src + 1, 1)
    xadj = np.cumsum(xadj)
    opts = pymetis.Options(seed=int(seed))
    if hasattr(pymetis, "CSRAdjacency"):   # pymetis >= 2025: xadj/adjncy keywords deprecated
        adjacency = pymetis.CSRAdjacency(xadj.tolist(), dst.tolist())
        _, membership = pymetis.part_graph(k, adjacency, options=opts)
    else:
        _, membership = pymetis.part_graph(k, xadj=xadj.tolist(), adjncy=dst.tolist(), options=opts)
    return np.asarray(membership, dtype=np.int64)


def louvain_parts(edge_index: Tensor, num_nodes: int, k: int, seed: int) -> np.ndarray:
    """Part id of every node: Louvain communities packed greedily into ``k`` clients."""
    import networkx as nx

    g = nx.Graph()
    g.add_nodes_from(range(num_nodes))
    g.add_edges_from(_undirected_pairs(edge_index, num_nodes).T.tolist())
    comms = nx.community.louvain_communities(g, seed=int(seed))
    comms = sorted((sorted(c) for c in comms), key=lambda c: (-len(c), c[0]))
    sizes = np.zeros(k, dtype=np.int64)
    out = np.empty(num_nodes, dtype=np.int64)
    for c in comms:
        j = int(np.argmin(sizes))   # ties: the lowest client id
        out[c] = j
        sizes[j] += len(c)
    return out


def node_parts(kind: str, edge_index: Tensor, num_nodes: int, k: int, seed: int) -> np.ndarray:
    if kind == "metis":
        return metis_parts(edge_index, num_nodes, k, seed)
    if kind == "louvain":
        return louvain_parts(edge_index, num_nodes, k, seed)
    raise ValueError(f"unknown graph partition {kind!r}; choose one of {', '.join(PARTITIONS)}")


@dataclass
class Subgraph:
    """One client's part: its nodes (ids in the whole graph), the induced edges (local ids),
    features, labels, and the local train / val / test node positions."""

    nodes: Tensor
    edge_index: Tensor
    x: Tensor
    y: Tensor
    train: Tensor
    val: Tensor
    test: Tensor

    @property
    def num_nodes(self) -> int:
        return int(self.nodes.numel())


def induced_subgraph(edge_index: Tensor, nodes: Tensor, num_nodes: int) -> Tensor:
    """Edges with both ends in ``nodes``, renumbered to positions in ``nodes`` (others dropped)."""
    return subgraph(nodes, edge_index, relabel_nodes=True, num_nodes=num_nodes)[0]


def split_nodes(n: int, train_fraction: float, val_fraction: float, seed: int, part: int
                ) -> tuple[Tensor, Tensor, Tensor]:
    """Seeded train / val / test positions of ``n`` local nodes (each non-empty when n >= 3)."""
    order = torch.from_numpy(np.random.default_rng([seed, 17, part]).permutation(n))
    n_tr = max(1, int(round(n * train_fraction))) if n >= 3 else n
    n_va = max(1, int(round(n * val_fraction))) if n >= 3 else 0
    n_tr = min(n_tr, max(n - n_va - 1, 1)) if n >= 3 else n_tr
    tr, va, te = order[:n_tr], order[n_tr:n_tr + n_va], order[n_tr + n_va:]
    return tr.sort().values, va.sort().values, te.sort().values


def partition_graph(data, kind: str, k: int, seed: int, train_fraction: float,
                    val_fraction: float) -> list[Subgraph]:
    """``k`` disjoint client subgraphs of ``data`` (a PyG ``Data``), edges across parts dropped."""
    n = int(data.num_nodes)
    parts = node_parts(kind, data.edge_index, n, k, seed)
    out = []
    for p in range(k):
        nodes = torch.from_numpy(np.flatnonzero(parts == p)).long()
        tr, va, te = split_nodes(int(nodes.numel()), train_fraction, val_fraction, seed, p)
        out.append(Subgraph(nodes=nodes, edge_index=induced_subgraph(data.edge_index, nodes, n),
                            x=data.x[nodes], y=data.y[nodes], train=tr, val=va, test=te))
    return out
