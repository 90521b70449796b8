"""Weighted neighbourhood sum ``out[i] = Σ_{(j→i)} w_ji · h[j]`` as a CSR product.

Measured on this project's 2-core CPU (Cora, 512 channels, forward + backward): gather/scatter
with ``index_add_`` takes about 32 ms, a CSR product about 8 ms. ``torch.sparse`` does give
gradients for the *values* of a sparse matrix, but slowly (0.18 s), and UGS needs exactly that
gradient (its learnable edge mask). So this is a small autograd function:

* forward: ``A @ H`` with ``A[dst, src] = w`` in CSR;
* backward: ``grad_H = Aᵀ @ G`` (a second CSR product) and, only when ``w`` requires grad,
  ``grad_w[e] = <G[dst_e], H[src_e]>`` (one gather per side).
"""

from __future__ import annotations

import torch
from torch import Tensor


def _csr(row: Tensor, col: Tensor, val: Tensor, shape: tuple[int, int]) -> Tensor:
    coo = torch.sparse_coo_tensor(torch.stack([row, col]), val, shape, check_invariants=False)
    return coo.coalesce().to_sparse_csr()


class _SpMM(torch.autograd.Function):
    @staticmethod
    def forward(ctx, w: Tensor, h: Tensor, src: Tensor, dst: Tensor, num_nodes: int) -> Tensor:
        shape = (num_nodes, h.size(0))
        a = _csr(dst, src, w.detach(), shape)
        ctx.save_for_backward(w, h, src, dst)
        ctx.shape = shape
        return a @ h

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        w, h, src, dst = ctx.saved_tensors
        grad_w = grad_h = None
        g = grad_out.contiguous()
        if ctx.needs_input_grad[1]:
            at = _csr(src, dst, w.detach(), (ctx.shape[1], ctx.shape[0]))
            grad_h = at @ g
        if ctx.needs_input_grad[0]:
            grad_w = (g.index_select(0, dst) * h.index_select(0, src)).sum(-1)
        return grad_w, grad_h, None, None, None


def spmm(edge_index: Tensor, weight: Tensor | None, h: Tensor, num_nodes: int) -> Tensor:
    """Sum of ``weight``-scaled messages from ``edge_index[0]`` into ``edge_index[1]``.

    Duplicate edges add up (as with ``index_add_``). ``h`` must be 2-D ``[N, F]``.
    """
    src, dst = edge_index[0], edge_index[1]
    if weight is None:
        weight = torch.ones(src.numel(), dtype=h.dtype, device=h.device)
    return _SpMM.apply(weight.to(h.dtype), h, src, dst, int(num_nodes))
