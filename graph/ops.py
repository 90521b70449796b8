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


class _FixedSpMM(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h: Tensor, a: Tensor, at: Tensor) -> Tensor:
        ctx.at = at
        return a @ h

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        return ctx.at @ grad_out.contiguous(), None, None


class FixedAdjacency:
    """A weighted adjacency that needs no gradient, in CSR together with its transpose.

    Built once per graph (per level) instead of once per layer call: turning an edge list into
    CSR (a coalesce, i.e. a sort) costs more than the product itself on Cora.
    """

    def __init__(self, edge_index: Tensor, weight: Tensor | None, num_nodes: int, dtype=torch.float32):
        src, dst = edge_index[0], edge_index[1]
        if weight is None:
            weight = torch.ones(src.numel(), dtype=dtype, device=src.device)
        w = weight.detach().to(dtype)
        n = int(num_nodes)
        self.a = _csr(dst, src, w, (n, n))
        self.at = _csr(src, dst, w, (n, n))

    def __matmul__(self, h: Tensor) -> Tensor:
        return _FixedSpMM.apply(h, self.a, self.at)


class AdjacencyCache:
    """Remembers the :class:`FixedAdjacency` of the last ``(edge_index, edge_weight)`` seen.

    Keyed by tensor identity and kept alive by reference (so an id cannot be reused while
    cached): a training run passes the same tensors every epoch, and a new level passes new ones.
    """

    def __init__(self):
        self._key: tuple | None = None
        self._value = None

    def get(self, edge_index: Tensor, edge_weight: Tensor | None, build):
        key = (edge_index, edge_weight)
        if self._key is None or self._key[0] is not edge_index or self._key[1] is not edge_weight:
            self._value = build()
            self._key = key
        return self._value


class BagMatrix:
    """A fixed sparse matrix ``M [R, C]`` whose product ``M @ H`` is one ``embedding_bag``.

    Row ``i`` of ``M @ H`` is ``Σ_k v_k · H[col_k]`` over row ``i``'s stored entries: exactly an
    embedding bag with per-sample weights. On this project's CPU that kernel (a gather and a
    weighted sum, no output zero-fill or layout copy) took 1.5 ms for Cora's ``X @ W1``
    (49k non-zeros x 512 channels) against 4.1 ms for the CSR product, and 0.75 ms against 2.9 ms
    for ``Â @ H``. Sums are taken in another order than the CSR kernel's, so the results agree
    with it to float rounding (about 1e-7 relative), not bit for bit.
    """

    def __init__(self, csr: Tensor):
        if csr.layout != torch.sparse_csr:
            raise ValueError(f"BagMatrix needs a CSR tensor, got layout {csr.layout}")
        self.shape = tuple(csr.shape)
        self.index = csr.col_indices().contiguous()
        self.offsets = csr.crow_indices()[:-1].contiguous()
        self.weights = csr.values().contiguous()

    def __matmul__(self, h: Tensor) -> Tensor:
        if h.dim() != 2 or h.size(0) != self.shape[1]:
            raise ValueError(f"cannot multiply a {self.shape} matrix by {tuple(h.shape)}")
        return torch.nn.functional.embedding_bag(self.index, h.contiguous(), self.offsets,
                                                 mode="sum", per_sample_weights=self.weights)
