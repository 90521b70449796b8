"""TEDDY's degree-based edge score, computed from the structure alone in O(|E|).

TEDDY (Seo et al., ICLR 2024) ranks an edge by how "low-degree" its endpoints *and their
neighbourhoods* are. With ``d_i`` the degree of node ``i`` without self-loops:

    ḡ_i = (1 / d_i) · Σ_{k ∈ N(i)} d_k^{-1/2}     (mean inverse-sqrt degree of i's neighbours)
    s_i = ḡ_i / d_i
    score(i, j) = s_i · s_j

Edges between low-degree nodes with low-degree neighbourhoods score highest (they carry
information that no other path does); hub–hub edges score lowest and are pruned first. Everything
is a gather or a scatter over the edge list, so the cost is O(|E|) and nothing N x N is ever built.

Isolated nodes (``d_i = 0``) get ``s_i = 0`` instead of dividing by zero; they have no edges, so the
value never ranks anything. Degree-1 nodes are fine: ``ḡ_i = d_k^{-1/2}`` of their one neighbour.
"""

from __future__ import annotations

import torch
from torch import Tensor

from graph.edges import UndirectedPairs, undirected_pairs


def teddy_node_scores(upairs: UndirectedPairs) -> Tensor:
    """``s_i = ḡ_i / d_i`` for every node (float64 so ties are real ties, not rounding noise)."""
    n = upairs.num_nodes
    u, v = upairs.pairs
    deg = upairs.degree().to(torch.float64)
    inv_sqrt = torch.where(deg > 0, deg.clamp(min=1).rsqrt(), torch.zeros_like(deg))
    inv = torch.where(deg > 0, 1.0 / deg.clamp(min=1), torch.zeros_like(deg))
    # Σ_{k∈N(i)} d_k^{-1/2}: each undirected pair contributes to both endpoints.
    neigh = torch.zeros(n, dtype=torch.float64, device=deg.device)
    neigh.scatter_add_(0, u, inv_sqrt[v])
    neigh.scatter_add_(0, v, inv_sqrt[u])
    g_bar = neigh * inv
    return g_bar * inv


def teddy_pair_scores(upairs: UndirectedPairs) -> Tensor:
    """One score per undirected pair: ``s_u · s_v`` (symmetric by construction)."""
    s = teddy_node_scores(upairs)
    u, v = upairs.pairs
    return s[u] * s[v]


def teddy_edge_scores(edge_index: Tensor, num_nodes: int | None = None) -> Tensor:
    """The TEDDY score of every directed edge of ``edge_index`` (float64, shape ``[E]``).

    Both directions of an undirected edge get the identical value; self-loops get ``+inf``
    because TEDDY never prunes them.
    """
    up = undirected_pairs(edge_index, num_nodes)
    ps = teddy_pair_scores(up)
    out = torch.full((up.pair_id.numel(),), float("inf"), dtype=torch.float64,
                     device=edge_index.device)
    nl = up.pair_id >= 0
    out[nl] = ps[up.pair_id[nl]]
    return out
