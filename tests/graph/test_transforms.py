"""TeddyEdgeSparsify / RandomEdgeSparsify: exact counts, symmetry, self-loops, nesting, isolated nodes."""

from __future__ import annotations

import math

import pytest
import torch
import torch_geometric.transforms as T
from torch_geometric.data import Data
from torch_geometric.utils import is_undirected

from graph.edges import num_removed, undirected_pairs
from graph.transforms import RandomEdgeSparsify, TeddyEdgeSparsify

TRANSFORMS = [lambda s: TeddyEdgeSparsify(s), lambda s: RandomEdgeSparsify(s, seed=3)]
SPARSITIES = [0.0, 0.05, 0.3, 0.5, 0.77, 0.99]


def pairs_of(edge_index, n):
    return {tuple(p) for p in undirected_pairs(edge_index, n).pairs.t().tolist()}


@pytest.mark.parametrize("make", TRANSFORMS, ids=["teddy", "random"])
@pytest.mark.parametrize("sparsity", SPARSITIES)
def test_exact_count_and_symmetry_on_cora(cora, make, sparsity):
    m = undirected_pairs(cora.edge_index, cora.num_nodes).num_pairs
    out = make(sparsity)(cora)
    kept = pairs_of(out.edge_index, cora.num_nodes)
    assert len(kept) == m - math.floor(sparsity * m + 0.5)
    assert is_undirected(out.edge_index, num_nodes=cora.num_nodes)
    assert out.edge_index.size(1) == 2 * len(kept)  # Cora has no loops or duplicates
    assert out.num_nodes == cora.num_nodes and torch.equal(out.x, cora.x)
    assert cora.edge_index.size(1) == 10556  # the input was not modified in place


def test_thirty_percent_example(cora):
    out = TeddyEdgeSparsify(sparsity=0.3)(cora)
    assert out.edge_index.size(1) // 2 == 5278 - 1583  # round(0.3 * 5278) = 1583 removed


@pytest.mark.parametrize("make", TRANSFORMS, ids=["teddy", "random"])
def test_symmetric_even_when_every_score_ties(make):
    n = 9  # a cycle: every node has degree 2, so every TEDDY score is identical
    und = [(i, (i + 1) % n) for i in range(n)]
    ei = torch.tensor([e for u, v in und for e in ((u, v), (v, u))]).t()
    for s in (0.1, 0.5, 0.5 + 1e-9, 0.9):
        out = make(s)(Data(edge_index=ei, num_nodes=n))
        assert is_undirected(out.edge_index, num_nodes=n)
        assert len(pairs_of(out.edge_index, n)) == n - num_removed(s, n)


def test_half_rounds_up_deterministically():
    assert num_removed(0.5, 3) == 2 and num_removed(0.5, 5) == 3  # not banker's rounding
    assert num_removed(0.0, 10) == 0 and num_removed(0.999, 10) == 10


@pytest.mark.parametrize("make", TRANSFORMS, ids=["teddy", "random"])
def test_keeps_self_loops_and_filters_edge_attributes(make, graph_factory):
    data = graph_factory(num_nodes=40, seed=1)
    n = data.num_nodes
    loops = torch.arange(0, n, 3)
    data.edge_index = torch.cat([data.edge_index, torch.stack([loops, loops])], dim=1)
    data.edge_weight = torch.arange(data.edge_index.size(1), dtype=torch.float)
    data.edge_attr = torch.randn(data.edge_index.size(1), 4)
    out = make(0.6)(data)
    row, col = out.edge_index
    assert sorted(row[row == col].tolist()) == loops.tolist()
    # each surviving edge still carries its own attributes
    orig = {(int(a), int(b)): i for i, (a, b) in enumerate(data.edge_index.t().tolist())}
    for j, (a, b) in enumerate(out.edge_index.t().tolist()):
        i = orig[(a, b)]
        assert out.edge_weight[j] == data.edge_weight[i]
        assert torch.equal(out.edge_attr[j], data.edge_attr[i])


@pytest.mark.parametrize("make", TRANSFORMS, ids=["teddy", "random"])
def test_nested_across_levels(cora, make):
    levels = [1 - 0.95 ** k for k in range(0, 21)]
    prev = None
    for s in levels:
        kept = pairs_of(make(s)(cora).edge_index, cora.num_nodes)
        if prev is not None:
            assert kept <= prev
        prev = kept


@pytest.mark.parametrize("make", TRANSFORMS, ids=["teddy", "random"])
def test_isolated_nodes(make):
    ei = torch.tensor([[0, 1, 1, 2, 5, 6], [1, 0, 2, 1, 6, 5]])  # nodes 3, 4, 7 isolated
    data = Data(x=torch.randn(8, 2), edge_index=ei)
    out = make(0.34)(data)
    assert out.num_nodes == 8 and out.x.shape == (8, 2)
    assert len(pairs_of(out.edge_index, 8)) == 3 - num_removed(0.34, 3)
    assert is_undirected(out.edge_index, num_nodes=8)
    empty = make(0.5)(Data(x=torch.randn(4, 2), edge_index=torch.zeros(2, 0, dtype=torch.long)))
    assert empty.edge_index.shape == (2, 0)


def test_teddy_drops_the_hub_hub_edge_first():
    und = [(0, 1)] + [(0, k) for k in range(2, 6)] + [(1, k) for k in range(6, 10)]
    ei = torch.tensor([e for u, v in und for e in ((u, v), (v, u))]).t()
    out = TeddyEdgeSparsify(1 / 9)(Data(edge_index=ei, num_nodes=10))
    assert (0, 1) not in pairs_of(out.edge_index, 10)
    assert len(pairs_of(out.edge_index, 10)) == 8


def test_random_is_reproducible_per_seed(cora):
    a = RandomEdgeSparsify(0.4, seed=1)(cora).edge_index
    b = RandomEdgeSparsify(0.4, seed=1)(cora).edge_index
    c = RandomEdgeSparsify(0.4, seed=2)(cora).edge_index
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_a_one_way_edge_goes_with_its_pair():
    ei = torch.tensor([[0, 1, 2], [1, 0, 3]])  # 2->3 has no reverse
    out = TeddyEdgeSparsify(0.5)(Data(edge_index=ei, num_nodes=4))
    kept = pairs_of(out.edge_index, 4)
    assert len(kept) == 1
    if (0, 1) in kept:
        assert out.edge_index.size(1) == 2
    else:
        assert out.edge_index.tolist() == [[2], [3]]


def test_usable_inside_a_pyg_pipeline(cora):
    pipeline = T.Compose([TeddyEdgeSparsify(0.3), T.ToSparseTensor()])
    out = pipeline(cora)
    adj = out.adj_t
    nnz = adj.nnz() if hasattr(adj, "nnz") else adj._nnz()  # torch_sparse or torch.sparse
    assert nnz == 2 * (5278 - 1583)
    with pytest.raises(ValueError, match="before"):
        TeddyEdgeSparsify(0.3)(T.ToSparseTensor()(cora))


@pytest.mark.parametrize("bad", [1.0, 1.5, -0.1, float("nan")])
def test_rejects_impossible_sparsity(bad):
    with pytest.raises(ValueError, match="sparsity"):
        TeddyEdgeSparsify(bad)
    with pytest.raises(ValueError, match="sparsity"):
        RandomEdgeSparsify(bad)


def test_repr():
    assert repr(TeddyEdgeSparsify(0.25)) == "TeddyEdgeSparsify(sparsity=0.25)"
