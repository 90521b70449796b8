"""The functional edge sparsifiers, the one pair<->edge mapping, HeteroData, and larger graphs."""

from __future__ import annotations

import pytest
import torch
import torch_geometric.transforms as T
from torch_geometric.data import Data, HeteroData
from torch_geometric.utils import coalesce, is_undirected, stochastic_blockmodel_graph

from graph.edges import bipartite_pairs, num_removed, pair_to_edge, undirected_pairs
from graph.scores import teddy_edge_score
from graph.transforms import (
    RandomEdgeSparsify,
    TeddyEdgeSparsify,
    random_sparsify_edges,
    teddy_sparsify_edges,
)

SPARS = [0.0, 0.1, 0.37, 0.5, 0.9]


def sbm(num_edges_target: int, seed: int = 0):
    torch.manual_seed(seed)
    blocks = torch.tensor([400, 300, 300])
    n = int(blocks.sum())
    p_in = num_edges_target / (n * n) * 2.5
    probs = torch.full((3, 3), p_in / 8).fill_diagonal_(p_in).clamp(max=1.0)
    return stochastic_blockmodel_graph(blocks, probs, directed=False), n


def pair_set(ei):
    return {tuple(sorted(p)) for p in ei.t().tolist() if p[0] != p[1]}


def test_pair_to_edge_is_the_inverse_of_the_grouping():
    ei = torch.tensor([[0, 1, 2, 2, 3, 1], [1, 0, 2, 3, 2, 0]])  # a loop and a duplicate 1->0
    up = undirected_pairs(ei, 4)
    vals = torch.arange(10, 10 + up.num_pairs)
    out = pair_to_edge(up, vals, -1)
    for e in range(ei.size(1)):
        u, v = sorted(ei[:, e].tolist())
        if u == v:
            assert int(out[e]) == -1
        else:
            pid = [i for i in range(up.num_pairs) if up.pairs[:, i].tolist() == [u, v]][0]
            assert int(out[e]) == int(vals[pid])
    only_loops = undirected_pairs(torch.tensor([[1, 2], [1, 2]]), 3)
    assert pair_to_edge(only_loops, torch.zeros(0, dtype=torch.bool), True).tolist() == [True, True]
    with pytest.raises(ValueError, match="pair values"):
        pair_to_edge(up, vals[:-1], 0)


@pytest.mark.parametrize("s", SPARS)
def test_functional_matches_transform_and_is_symmetric_and_exact(s):
    ei, n = sbm(20_000)
    m = undirected_pairs(ei, n).num_pairs
    out, mask = teddy_sparsify_edges(ei, s, n)
    assert mask.dtype == torch.bool and mask.shape == (ei.size(1),)
    assert torch.equal(out, ei[:, mask])
    assert torch.equal(out, TeddyEdgeSparsify(s)(Data(edge_index=ei, num_nodes=n)).edge_index)
    assert is_undirected(out, num_nodes=n)
    assert len(pair_set(out)) == m - num_removed(s, m)
    r_out, _ = random_sparsify_edges(ei, s, n, seed=5)
    assert torch.equal(r_out, RandomEdgeSparsify(s, seed=5)(Data(edge_index=ei,
                                                                 num_nodes=n)).edge_index)
    assert is_undirected(r_out, num_nodes=n)


def test_functional_nested_and_scores_ignore_duplicates_and_loops():
    ei, n = sbm(20_000, seed=1)
    prev = None
    for s in [0.05 * k for k in range(19)]:
        kept = pair_set(teddy_sparsify_edges(ei, s, n)[0])
        assert prev is None or kept <= prev
        prev = kept
    noisy = torch.cat([ei, ei[:, :500], torch.arange(n).repeat(2, 1)], dim=1)  # dups + loops
    a = teddy_edge_score(ei, n)
    b = teddy_edge_score(noisy, n)
    assert torch.equal(b[: ei.size(1)], a) and torch.isinf(b[-n:]).all()


def test_score_rejects_bad_edge_index():
    with pytest.raises(ValueError, match="shape"):
        teddy_edge_score(torch.zeros(3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="num_nodes"):
        teddy_edge_score(torch.tensor([[0, 5], [5, 0]]), num_nodes=3)
    with pytest.raises(ValueError, match="negative"):
        teddy_edge_score(torch.tensor([[0, -1], [1, 0]]))
    with pytest.raises(ValueError, match="integer"):
        teddy_edge_score(torch.tensor([[0.0, 1.0], [1.0, 0.0]]))


def test_bipartite_score_is_the_score_of_the_disjoint_union():
    g = torch.Generator().manual_seed(0)
    n_a, n_b = 50, 30
    ei = coalesce(torch.stack([torch.randint(0, n_a, (300,), generator=g),
                               torch.randint(0, n_b, (300,), generator=g)]))
    bip = teddy_edge_score(ei, size=(n_a, n_b))
    union = torch.stack([ei[0], ei[1] + n_a])
    union = torch.cat([union, union.flip(0)], dim=1)
    hom = teddy_edge_score(union, n_a + n_b)[: ei.size(1)]
    assert torch.allclose(bip, hom, rtol=1e-12, atol=0)
    with pytest.raises(ValueError, match="size"):
        bipartite_pairs(ei, (n_a, 3))


def hetero(seed=0):
    g = torch.Generator().manual_seed(seed)
    data = HeteroData()
    data["paper"].x = torch.randn(60, 4, generator=g)
    data["author"].x = torch.randn(40, 4, generator=g)
    cites = coalesce(torch.randint(0, 60, (2, 400), generator=g))
    data["paper", "cites", "paper"].edge_index = torch.cat([cites, cites.flip(0)], 1)
    writes = coalesce(torch.stack([torch.randint(0, 40, (300,), generator=g),
                                   torch.randint(0, 60, (300,), generator=g)]))
    data["author", "writes", "paper"].edge_index = writes
    data["author", "writes", "paper"].edge_weight = torch.arange(writes.size(1), dtype=torch.float)
    return T.ToUndirected()(data)  # adds paper -rev_writes-> author, mirrored


@pytest.mark.parametrize("make", [TeddyEdgeSparsify, lambda s: RandomEdgeSparsify(s, seed=2)],
                         ids=["teddy", "random"])
def test_hetero_every_edge_type_sparsified_and_mirrors_stay_mirrored(make):
    data = hetero()
    out = make(0.4)(data)
    for key in data.edge_types:
        before, after = data[key].edge_index, out[key].edge_index
        src, _, dst = key
        if src == dst:
            m = undirected_pairs(before, data[src].num_nodes).num_pairs
            assert is_undirected(after, num_nodes=data[src].num_nodes)
            assert len(pair_set(after)) == m - num_removed(0.4, m)
        else:
            m = bipartite_pairs(before, (data[src].num_nodes, data[dst].num_nodes)).num_pairs
            assert after.size(1) == m - num_removed(0.4, m)
    fwd = out["author", "writes", "paper"]
    rev = out["paper", "rev_writes", "author"]
    assert {tuple(e) for e in fwd.edge_index.t().tolist()} == \
        {tuple(e) for e in rev.edge_index.flip(0).t().tolist()}
    # the edge weight went with its edge (the original weight is the edge's original position)
    orig = {tuple(e): i for i, e in enumerate(data["author", "writes", "paper"].edge_index.t().tolist())}
    for j, e in enumerate(fwd.edge_index.t().tolist()):
        assert int(fwd.edge_weight[j]) == orig[tuple(e)]
    assert data["author", "writes", "paper"].edge_index.size(1) == len(orig)  # input untouched


def test_hetero_store_without_edge_index_is_named():
    data = hetero()
    data = T.ToSparseTensor()(data)
    with pytest.raises(ValueError, match="edge type .*before"):
        TeddyEdgeSparsify(0.3)(data)
