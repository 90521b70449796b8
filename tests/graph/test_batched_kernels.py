"""graph.ops: the fused output-layer loops are the torch ops to float rounding; FusedAdam is
torch's fused Adam bit for bit."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from graph.models import dropout
from graph.ops import (
    BagMatrix,
    FusedAdam,
    GCNOutLayer,
    bag_kernels,
    gcn_out_kernels,
    transposed_chain,
)

lib = gcn_out_kernels()
needs_kernels = pytest.mark.skipif(lib is None, reason="no C compiler here: the torch ops run alone")


@pytest.fixture(params=["simd", "portable"])
def layer(request):
    """Both loops: AVX-512 (where the CPU has it) and the portable C ones."""
    lib.gcn_out_allow_simd(int(request.param == "simd"))
    yield GCNOutLayer(lib)
    lib.gcn_out_allow_simd(1)


@needs_kernels
@pytest.mark.parametrize("c", [7, 3, 8, 11])  # padded to blocks of 8 output columns
@pytest.mark.parametrize("with_mask", [True, False], ids=["dropout", "no-dropout"])
def test_fused_output_layer_is_the_torch_ops(layer, c, with_mask):
    g = torch.Generator().manual_seed(c)
    n, d = 53, 48
    z = torch.randn(n, d, generator=g)
    w = torch.randn(c, d, generator=g) * 0.1
    grad = torch.randn(n, c, generator=g)
    m = dropout(torch.ones(n, d), 0.5, True) if with_mask else None
    h = torch.relu(z)
    hd_ref = h * m if with_mask else h
    bits = layer.pack(m) if with_mask else None
    if with_mask:
        assert bits is not None and bits.scale == 2.0  # 1 / (1 - p)
    ev, tr = layer.forward(z, bits, w)
    torch.testing.assert_close(ev, F.linear(h, w), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(tr, F.linear(hd_ref, w), rtol=1e-5, atol=1e-5)
    gw, dp = layer.backward(grad, w, z, bits)
    dh = grad.mm(w)
    if with_mask:
        dh = dh * m
    torch.testing.assert_close(gw, grad.t().mm(hd_ref), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dp, torch.ops.aten.threshold_backward(dh, h, 0),
                               rtol=1e-5, atol=1e-5)
    assert torch.equal(dp == 0, (hd_ref <= 0) | (dh == 0))  # ReLU's and dropout's zeros


@needs_kernels
def test_packed_mask_is_the_mask_bit_for_bit(layer):
    """The bits hold exactly the kept entries; what is not a {0, s} mask is refused (None)."""
    g = torch.Generator().manual_seed(0)
    m = dropout(torch.ones(37, 64), 0.3, True)
    bits = layer.pack(m)
    assert bits is not None and bits.scale == float(m.max())
    u = bits.bits.view(-1, 1).to(torch.int32) & 0xFFFF
    unpacked = ((u >> torch.arange(16)) & 1).reshape(m.shape).bool()
    assert torch.equal(unpacked, m != 0)
    assert layer.pack(torch.rand(4, 16, generator=g) + 0.5) is None  # many values
    m[3, 5] = 1.5
    assert layer.pack(m) is None
    assert layer.pack(torch.zeros(4, 32)).scale == 0.0  # all dropped: no value to find
    with pytest.raises(ValueError, match="dropout bits"):
        layer.forward(torch.zeros(4, 64), bits, torch.zeros(7, 64))


def test_other_shapes_and_dtypes_keep_the_torch_ops():
    assert GCNOutLayer.usable(torch.zeros(4, 32), torch.zeros(7, 32))
    assert not GCNOutLayer.usable(torch.zeros(4, 30), torch.zeros(7, 30))  # not 16 lanes wide
    assert not GCNOutLayer.usable(torch.zeros(4, 32, dtype=torch.float64),
                                  torch.zeros(7, 32, dtype=torch.float64))


@pytest.mark.parametrize("weight_decay", [0.0, 5e-4])
def test_fused_adam_is_torch_adam_bit_for_bit(weight_decay):
    g = torch.Generator().manual_seed(1)
    shapes = [(33, 16), (7, 5)]
    ours = [torch.nn.Parameter(torch.randn(s, generator=g)) for s in shapes]
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    mine = FusedAdam(ours, lr=0.01, weight_decay=weight_decay)
    ref = torch.optim.Adam(theirs, lr=0.01, weight_decay=weight_decay, fused=True)
    for _ in range(5):
        for a, b in zip(ours, theirs):
            a.grad = torch.randn(a.shape, generator=g)
            b.grad = a.grad.clone()
        mine.step()
        ref.step()
        for a, b in zip(ours, theirs):
            assert torch.equal(a.detach().view(torch.int32), b.detach().view(torch.int32))


def test_fused_adam_skips_a_parameter_without_gradient_as_torch_adam_does():
    # the dense teacher's loop (graph.train) uses FusedAdam: a parameter that got no gradient in
    # a step (set_to_none) must keep its value and its step counter, as in Adam.step
    g = torch.Generator().manual_seed(2)
    ours = [torch.nn.Parameter(torch.randn(9, 4, generator=g)) for _ in range(2)]
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    mine = FusedAdam(ours, lr=0.01, weight_decay=5e-4)
    ref = torch.optim.Adam(theirs, lr=0.01, weight_decay=5e-4, fused=True)
    for step in range(6):
        mine.zero_grad(set_to_none=True)
        ref.zero_grad(set_to_none=True)
        for i, (a, b) in enumerate(zip(ours, theirs)):
            if i == 1 and step % 2:   # the second parameter skips every other step
                continue
            a.grad = torch.randn(a.shape, generator=g)
            b.grad = a.grad.clone()
        mine.step()
        ref.step()
        for a, b in zip(ours, theirs):
            assert torch.equal(a.detach().view(torch.int32), b.detach().view(torch.int32))
    assert ours[0].grad is not None
    mine.zero_grad()
    assert all(p.grad is None for p in ours)


bag_lib = bag_kernels()
needs_bag_kernels = pytest.mark.skipif(
    bag_lib is None, reason="no C compiler or no AVX-512 here: torch's embedding bag runs alone")


def _sparse(rows, cols, density, g, empty=()):
    dense = torch.rand(rows, cols, generator=g)
    dense[dense > density] = 0
    for r in empty:  # rows with no entries: their product rows are +0
        dense[r] = 0
    return dense.to_sparse_csr()


def _bag(m: BagMatrix, h):
    return F.embedding_bag(m.index, h, m.offsets, mode="sum", per_sample_weights=m.weights)


@needs_bag_kernels
@pytest.mark.parametrize("d", [16, 144, 512])  # the 16-lane tail alone, blocks + tail, blocks
def test_bag_kernel_is_the_embedding_bag_bit_for_bit(d):
    g = torch.Generator().manual_seed(d)
    m = BagMatrix(_sparse(61, 47, 0.2, g, empty=(0, 17, 60)))
    assert m.lib is not None
    h = torch.randn(47, d, generator=g)
    h[3] = -0.0  # signed zeros: fma from +0 as the bag sums
    out = m @ h
    assert torch.equal(out.view(torch.int32), _bag(m, h).view(torch.int32))
    assert torch.equal(out[[0, 17, 60]], torch.zeros(3, d))


@needs_bag_kernels
@pytest.mark.parametrize("d", [16, 144])
def test_transposed_chain_is_the_two_bags_bit_for_bit(d):
    g = torch.Generator().manual_seed(d + 1)
    xs = _sparse(53, 29, 0.15, g, empty=(4, 52))  # X [n, m]: columns 0..28, some rows empty
    x, xt = BagMatrix(xs), BagMatrix(xs.to_dense().t().contiguous().to_sparse_csr())
    at = BagMatrix(_sparse(53, 53, 0.1, g, empty=(9,)))
    grad = torch.randn(53, d, generator=g)
    out = transposed_chain(x, xt, at, grad)
    ref = _bag(xt, _bag(at, grad))
    assert torch.equal(out.view(torch.int32), ref.view(torch.int32))
    with pytest.raises(ValueError, match="cannot chain"):
        transposed_chain(x, xt, at, grad[:50])


def test_bag_products_without_kernels_run_torch(monkeypatch):
    """FEDTICKET_NATIVE=0 (or widths the kernels do not cover): torch's embedding bag, the same
    products to rounding."""
    g = torch.Generator().manual_seed(3)
    xs = _sparse(40, 24, 0.2, g)
    at_csr = _sparse(40, 40, 0.1, g)
    grad = torch.randn(40, 32, generator=g)
    dense = xs.to_dense().t() @ (at_csr.to_dense() @ grad)
    monkeypatch.setenv("FEDTICKET_NATIVE", "0")
    x, xt, at = BagMatrix(xs), BagMatrix(xs.to_dense().t().contiguous().to_sparse_csr()), \
        BagMatrix(at_csr)
    assert x.lib is None and bag_kernels() is None
    torch.testing.assert_close(transposed_chain(x, xt, at, grad), dense, rtol=1e-5, atol=1e-5)
    monkeypatch.delenv("FEDTICKET_NATIVE")
    if bag_lib is not None:  # 7 wide (the output layer's products): not 16 lanes, torch runs
        h = torch.randn(40, 7, generator=g)
        assert torch.equal(BagMatrix(at_csr) @ h, _bag(at, h))


@needs_bag_kernels
@needs_kernels
@pytest.mark.parametrize("with_mask", [True, False], ids=["dropout", "no-dropout"])
@pytest.mark.parametrize("c", [7, 11])
def test_aggregate_forward_is_the_bag_then_the_output_layer_bit_for_bit(with_mask, c):
    g = torch.Generator().manual_seed(c)
    n, d = 45, 144
    a = BagMatrix(_sparse(n, n, 0.1, g, empty=(3,)))
    y = torch.randn(n, d, generator=g)
    w = torch.randn(c, d, generator=g) * 0.1
    layer = GCNOutLayer(lib)
    bits = layer.pack(dropout(torch.ones(n, d), 0.5, True)) if with_mask else None
    z, ev, tr = layer.aggregate_forward(a, y, bits, w)
    z_ref = a @ y
    ev_ref, tr_ref = layer.forward(z_ref, bits, w)
    for got, ref in ((z, z_ref), (ev, ev_ref), (tr, tr_ref)):
        assert torch.equal(got.view(torch.int32), ref.view(torch.int32))
    with pytest.raises(ValueError, match="dropout bits"):
        layer.aggregate_forward(a, y[:, :128], bits or layer.pack(torch.ones(n, d)), w[:, :128])


@needs_bag_kernels
@needs_kernels
@pytest.mark.parametrize("parts", [2, 3])
def test_split_kernels_give_the_same_bits(parts):
    """The dense teacher's kernels split over threads (rows, or columns for the sums over rows)
    compute every element as the one call does."""
    from concurrent.futures import ThreadPoolExecutor

    from graph.ops import Split

    g = torch.Generator().manual_seed(parts)
    n, m, d = 57, 31, 144
    xs = _sparse(n, m, 0.15, g, empty=(2,))
    x, xt = BagMatrix(xs), BagMatrix(xs.to_dense().t().contiguous().to_sparse_csr())
    a = BagMatrix(_sparse(n, n, 0.1, g, empty=(n - 1,)))
    w1t, w2 = torch.randn(m, d, generator=g), torch.randn(7, d, generator=g)
    grad, gout = torch.randn(n, d, generator=g), torch.randn(n, 7, generator=g)
    layer = GCNOutLayer(lib)
    bits = layer.pack(dropout(torch.ones(n, d), 0.5, True))
    with ThreadPoolExecutor(parts) as pool:
        split = Split(pool, parts)
        assert len(split.ranges(d, 16)) == parts and split.ranges(d, 16)[-1][1] == d
        pairs = [(x.mm(w1t, split), x.mm(w1t)),
                 (transposed_chain(x, xt, a, grad, split), transposed_chain(x, xt, a, grad))]
        y = x.mm(w1t)
        pairs += list(zip(layer.aggregate_forward(a, y, bits, w2, split),
                          layer.aggregate_forward(a, y, bits, w2)))
        z = a @ y
        pairs += list(zip(layer.backward(gout, w2, z, bits, split),
                          layer.backward(gout, w2, z, bits)))
    for got, ref in pairs:
        assert torch.equal(got.view(torch.int32), ref.view(torch.int32))
