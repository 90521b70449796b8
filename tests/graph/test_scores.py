"""TEDDY's degree-based edge score against a hand computation."""

from __future__ import annotations

import math

import torch

from graph.edges import undirected_pairs
from graph.scores import teddy_edge_scores, teddy_node_scores, teddy_pair_scores


def small_graph():
    # 0-1, 1-2, 1-3, 3-4, a self-loop on 2, node 5 isolated; both directions listed
    und = [(0, 1), (1, 2), (1, 3), (3, 4)]
    edges = [e for u, v in und for e in ((u, v), (v, u))] + [(2, 2)]
    return torch.tensor(edges).t().contiguous(), 6


def hand_node_scores():
    d = {0: 1, 1: 3, 2: 1, 3: 2, 4: 1, 5: 0}  # degrees without the self-loop
    nbrs = {0: [1], 1: [0, 2, 3], 2: [1], 3: [1, 4], 4: [3], 5: []}
    s = {}
    for i in range(6):
        if d[i] == 0:
            s[i] = 0.0
            continue
        g_bar = sum(d[k] ** -0.5 for k in nbrs[i]) / d[i]
        s[i] = g_bar / d[i]
    return s


def test_node_scores_match_hand_computation():
    ei, n = small_graph()
    s = teddy_node_scores(undirected_pairs(ei, n))
    want = hand_node_scores()
    # spot values written out: s_0 = 1/sqrt(3); s_1 = (2 + 1/sqrt(2)) / 9; s_3 = (1/sqrt(3) + 1) / 4
    assert math.isclose(want[0], 1 / math.sqrt(3))
    assert math.isclose(want[1], (2 + 1 / math.sqrt(2)) / 9)
    assert math.isclose(want[3], (1 / math.sqrt(3) + 1) / 4)
    for i in range(n):
        assert math.isclose(float(s[i]), want[i], rel_tol=1e-12, abs_tol=1e-15), i


def test_edge_scores_match_hand_computation_and_are_symmetric():
    ei, n = small_graph()
    scores = teddy_edge_scores(ei, n)
    want = hand_node_scores()
    for e in range(ei.size(1)):
        u, v = int(ei[0, e]), int(ei[1, e])
        if u == v:
            assert math.isinf(float(scores[e])) and float(scores[e]) > 0  # loops: never pruned
        else:
            assert math.isclose(float(scores[e]), want[u] * want[v], rel_tol=1e-12)
    # both directions bit-identical
    lookup = {(int(a), int(b)): float(s) for a, b, s in zip(ei[0], ei[1], scores, strict=True)}
    for (u, v), s in lookup.items():
        assert lookup[(v, u)] == s
    assert torch.isfinite(teddy_pair_scores(undirected_pairs(ei, n))).all()


def test_hub_edges_score_lowest():
    # two hubs (0 and 1) joined, each with four leaves: the hub-hub edge must rank last
    und = [(0, 1)] + [(0, k) for k in range(2, 6)] + [(1, k) for k in range(6, 10)]
    ei = torch.tensor([e for u, v in und for e in ((u, v), (v, u))]).t()
    up = undirected_pairs(ei, 10)
    ps = teddy_pair_scores(up)
    hub = [i for i in range(up.num_pairs) if tuple(up.pairs[:, i].tolist()) == (0, 1)][0]
    assert int(ps.argmin()) == hub


def test_isolated_and_degree_one_nodes_are_safe():
    ei = torch.tensor([[0, 1], [1, 0]])  # one edge, nodes 2..4 isolated
    s = teddy_node_scores(undirected_pairs(ei, 5))
    assert torch.isfinite(s).all()
    assert s[2:].eq(0).all()
    assert float(s[0]) == 1.0 and float(s[1]) == 1.0  # d=1, neighbour d=1: g = 1, s = 1
    empty = teddy_edge_scores(torch.zeros(2, 0, dtype=torch.long), 3)
    assert empty.numel() == 0


def test_scores_on_cora_are_finite_and_linear_time(cora):
    scores = teddy_edge_scores(cora.edge_index, cora.num_nodes)
    assert scores.shape == (cora.edge_index.size(1),)
    assert torch.isfinite(scores).all() and (scores > 0).all()
