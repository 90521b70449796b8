"""graph.ops.GCNOutLayer: the fused output-layer loops are the torch ops, to float rounding."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from graph.models import dropout
from graph.ops import GCNOutLayer, gcn_out_kernels

lib = gcn_out_kernels()
pytestmark = pytest.mark.skipif(lib is None, reason="no C compiler here: the torch ops run alone")


@pytest.fixture(params=["simd", "portable"])
def layer(request):
    """Both loops: AVX-512 (where the CPU has it) and the portable C ones."""
    lib.gcn_out_allow_simd(int(request.param == "simd"))
    yield GCNOutLayer(lib)
    lib.gcn_out_allow_simd(1)


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
    ev, tr, hd = layer.forward(z, m, w)
    assert torch.equal(hd, hd_ref)  # element-wise: the very same values
    torch.testing.assert_close(ev, F.linear(h, w), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(tr, F.linear(hd_ref, w), rtol=1e-5, atol=1e-5)
    gw, dp = layer.backward(grad, w, hd, m)
    dh = grad.mm(w)
    if with_mask:
        dh = dh * m
    torch.testing.assert_close(gw, grad.t().mm(hd_ref), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dp, torch.ops.aten.threshold_backward(dh, h, 0),
                               rtol=1e-5, atol=1e-5)
    assert torch.equal(dp == 0, (hd_ref <= 0) | (dh == 0))  # ReLU's and dropout's zeros


def test_other_shapes_and_dtypes_keep_the_torch_ops():
    assert GCNOutLayer.usable(torch.zeros(4, 32), torch.zeros(7, 32))
    assert not GCNOutLayer.usable(torch.zeros(4, 30), torch.zeros(7, 30))  # not 16 lanes wide
    assert not GCNOutLayer.usable(torch.zeros(4, 32, dtype=torch.float64),
                                  torch.zeros(7, 32, dtype=torch.float64))
