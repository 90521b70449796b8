"""Sparse node features with a fast first-layer product.

Citation features are bag-of-words: Cora's 2708 x 1433 matrix is 1.3% non-zero. The first GNN
layer's ``X @ W^T`` dominates an epoch when ``X`` is dense (about 0.09 s forward + 0.08 s backward
on this machine's CPU for hidden size 512), while a CSR product takes under 0.01 s. We keep
``X`` and ``X^T`` in CSR form (same values, a fixed permutation between them) and use a small
autograd function whose backward is ``(X^T @ G)^T``: exact, just 10-20x cheaper.

Input dropout (GAT) drops *values* of the existing pattern, so no new sparsity pattern is ever built.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

# CSR tensors work fine for the two products used here; the "beta" notice would print once per run.
warnings.filterwarnings("ignore", message=".*Sparse CSR tensor support is in beta.*")


class SparseFeatures:
    """A feature matrix held as CSR plus its transpose, for ``linear(x, W)`` with grad on ``W``."""

    def __init__(self, x: Tensor):
        if x.dim() != 2:
            raise ValueError(f"features must be a 2-D matrix, got shape {tuple(x.shape)}")
        coo = (x if x.is_sparse else x.to_sparse_coo()).coalesce()
        row, col = coo.indices()
        self.shape = tuple(coo.shape)
        self.device = coo.device
        self.dtype = coo.dtype
        self.values = coo.values().contiguous()
        n, m = self.shape
        self._crow = torch._convert_indices_from_coo_to_csr(row, n)
        self._col = col.contiguous()
        perm = torch.argsort(col * n + row)  # (col, row) order: CSR of the transpose
        self._perm = perm
        self._t_crow = torch._convert_indices_from_coo_to_csr(col[perm], m)
        self._t_col = row[perm].contiguous()

    @property
    def nnz(self) -> int:
        return int(self.values.numel())

    def size(self, dim: int | None = None):
        return self.shape if dim is None else self.shape[dim]

    def csr(self, values: Tensor | None = None) -> Tensor:
        v = self.values if values is None else values
        return torch.sparse_csr_tensor(self._crow, self._col, v, self.shape, check_invariants=False)

    def csr_t(self, values: Tensor | None = None) -> Tensor:
        v = self.values if values is None else values
        return torch.sparse_csr_tensor(self._t_crow, self._t_col, v[self._perm],
                                       (self.shape[1], self.shape[0]), check_invariants=False)

    def to_dense(self) -> Tensor:
        return self.csr().to_dense()

    def to(self, device) -> "SparseFeatures":
        out = object.__new__(SparseFeatures)
        out.__dict__ = {k: (v.to(device) if isinstance(v, Tensor) else v)
                        for k, v in self.__dict__.items()}
        out.device = torch.device(device)
        return out

    def dropout(self, p: float, training: bool) -> "SparseFeaturesView":
        """Inverted dropout on the stored values (the pattern stays, dropped values become 0)."""
        if not training or p <= 0.0:
            return SparseFeaturesView(self, self.values)
        keep = torch.rand_like(self.values) >= p
        return SparseFeaturesView(self, self.values * keep / (1.0 - p))


class SparseFeaturesView:
    """``SparseFeatures`` with substituted values (after dropout)."""

    def __init__(self, base: SparseFeatures, values: Tensor):
        self.base = base
        self.values = values
        self.shape = base.shape


class _SparseLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, weight: Tensor, x_csr: Tensor, xt_csr: Tensor) -> Tensor:  # noqa: D401
        ctx.xt = xt_csr
        return x_csr @ weight.t()

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        grad_w = (ctx.xt @ grad_out).t() if ctx.needs_input_grad[0] else None
        return grad_w, None, None


def linear(x, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``x @ weight.T (+ bias)`` for a dense tensor, :class:`SparseFeatures` or a dropout view."""
    if isinstance(x, SparseFeatures):
        x = SparseFeaturesView(x, x.values)
    if isinstance(x, SparseFeaturesView):
        base = x.base
        out = _SparseLinear.apply(weight, base.csr(x.values), base.csr_t(x.values))
        return out if bias is None else out + bias
    return torch.nn.functional.linear(x, weight, bias)


def maybe_sparse(x: Tensor, max_density: float = 0.25):
    """Wrap ``x`` as :class:`SparseFeatures` when it is sparse enough to pay off."""
    if x.numel() == 0:
        return x
    density = int(torch.count_nonzero(x)) / x.numel()
    return SparseFeatures(x) if density <= max_density else x
