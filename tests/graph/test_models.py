"""Models, sparse features and the CSR message passing: exact against dense references."""

from __future__ import annotations

import pytest
import torch

from graph.features import SparseFeatures, linear, maybe_sparse
from graph.models import build_model, normalized_adjacency
from graph.ops import spmm


def test_sparse_linear_matches_dense_forward_and_grad():
    torch.manual_seed(0)
    x = torch.rand(30, 12) * (torch.rand(30, 12) < 0.2)
    w = torch.randn(5, 12, requires_grad=True)
    a = linear(SparseFeatures(x), w)
    (a ** 2).sum().backward()
    g_sparse = w.grad.clone()
    w.grad = None
    b = torch.nn.functional.linear(x, w)
    (b ** 2).sum().backward()
    assert torch.allclose(a, b, atol=1e-6) and torch.allclose(g_sparse, w.grad, atol=1e-5)
    assert isinstance(maybe_sparse(x), SparseFeatures)
    assert isinstance(maybe_sparse(torch.ones(3, 3)), torch.Tensor)


def test_spmm_gradcheck_and_duplicates():
    torch.manual_seed(0)
    ei = torch.randint(0, 10, (2, 40))
    w = torch.rand(40, dtype=torch.float64, requires_grad=True)
    h = torch.randn(10, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda w, h: spmm(ei, w, h, 10), (w, h))
    ref = torch.zeros(10, 3, dtype=torch.float64).index_add_(0, ei[1], h[ei[0]] * w[:, None])
    assert torch.allclose(spmm(ei, w, h, 10), ref)


def test_normalized_adjacency_matches_pyg_gcn_norm():
    from torch_geometric.nn.conv.gcn_conv import gcn_norm

    ei = torch.tensor([[0, 1, 1, 2, 3], [1, 0, 2, 1, 4]])
    a, av = normalized_adjacency(ei, None, 6)
    b, bv = gcn_norm(ei, None, 6)
    A = torch.zeros(6, 6).index_put_((a[1], a[0]), av, accumulate=True)
    B = torch.zeros(6, 6).index_put_((b[1], b[0]), bv, accumulate=True)
    assert torch.allclose(A, B)


@pytest.mark.parametrize("name", ["gcn", "gat", "gin"])
def test_models_take_sparse_features_and_edge_weights(graph_factory, name):
    data = graph_factory()
    torch.manual_seed(0)
    model = build_model(name, data.num_features, 3, hidden=16, heads=4).eval()
    dense = model(data.x, data.edge_index)
    sparse = model(SparseFeatures(data.x), data.edge_index)
    assert dense.shape == (data.num_nodes, 3)
    assert torch.allclose(dense, sparse, atol=1e-5)
    ones = torch.ones(data.edge_index.size(1))
    assert torch.allclose(model(data.x, data.edge_index, ones), dense, atol=1e-5)
    w = torch.rand(data.edge_index.size(1), requires_grad=True)
    model(data.x, data.edge_index, w).sum().backward()
    assert w.grad is not None and w.grad.abs().sum() > 0  # UGS's edge mask gets a gradient


@pytest.mark.parametrize("name", ["gcn", "gat", "gin"])
def test_zero_edge_weight_silences_the_edge(name):
    """A weight of 0 must cut the edge's message: node 0's output cannot depend on node 1."""
    torch.manual_seed(0)
    x = torch.randn(3, 4)
    ei = torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]])
    w = torch.tensor([1.0, 0.0, 1.0, 1.0])  # the message 1 -> 0 is silenced
    model = build_model(name, 4, 2, hidden=8, heads=2).eval()
    x2 = x.clone()
    x2[1] += 5.0
    x2[2] += 5.0
    # 2 hops: 0 hears 1 only through 1->0, which is silenced
    assert torch.allclose(model(x, ei, w)[0], model(x2, ei, w)[0], atol=1e-5)


def test_unknown_model():
    with pytest.raises(ValueError, match="unknown graph model"):
        build_model("sage", 4, 2)
    with pytest.raises(ValueError, match="divisible"):
        build_model("gat", 4, 2, hidden=10, heads=4)


def test_gat_output_attention_dropout_is_zero_as_in_the_teddy_code():
    """The TEDDY/UGS GAT drops attention in the first layer only (its last GATConv has
    dropout=0.): in training mode the output layer is deterministic for a fixed input."""
    torch.manual_seed(0)
    model = build_model("gat", 6, 3, hidden=8, heads=2, dropout=0.6)
    assert model.conv1.dropout == 0.6 and model.conv2.dropout == 0.0
    x = torch.randn(5, 8)
    ei = torch.tensor([[0, 1, 1, 2, 2, 3, 3, 4, 0, 1, 2, 3, 4], [1, 0, 2, 1, 3, 2, 4, 3, 0, 1, 2, 3, 4]])
    model.train()
    assert torch.equal(model.conv2(x, ei, None, 5), model.conv2(x, ei, None, 5))
    from graph.models import GAT

    noisy = GAT(6, 8, 3, heads=2, dropout=0.6, out_attention_dropout=0.5).train()
    outs = {tuple(noisy.conv2(x, ei, None, 5).flatten().tolist()) for _ in range(8)}
    assert len(outs) > 1  # the option does drop attention when asked to


def test_gin_starts_like_the_teddy_codes_nn_linear():
    """TEDDY's GIN is built from nn.Linear: U(±1/√fan_in), not Glorot (about 2x wider here)."""
    import math

    torch.manual_seed(0)
    gin = build_model("gin", 1433, 7, hidden=512, dropout=0.0)
    for w in (gin.conv1.weight, gin.conv2.weight, gin.mlp):
        bound = 1.0 / math.sqrt(w.shape[-1])
        assert float(w.abs().max()) <= bound
        assert float(w.std()) == pytest.approx(bound / math.sqrt(3), rel=0.05)  # uniform's std
    from graph.models import GIN

    glorot = GIN(1433, 512, 7, init="glorot")
    assert float(glorot.conv1.weight.abs().max()) > 1.5 / math.sqrt(1433)
    with pytest.raises(ValueError, match="GIN init"):
        GIN(4, 4, 2, init="xavier")
