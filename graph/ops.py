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


class FusedAdam:
    """``torch.optim.Adam(params, lr, weight_decay=wd, fused=True)``'s update, called directly.

    The very kernel (``torch._fused_adam_``) with the very state (zero moments, a float32 step
    counter per parameter, bumped before the kernel) that ``Adam.step`` passes it, so the
    parameters come out bit for bit the same (``tests/graph/test_batched_kernels.py``). What it
    skips is the Python around the kernel: ``Optimizer.step`` imports and calls
    ``torch._dynamo`` on every step (1.3-1.9 s to load, which ``graph.defer_dynamo`` keeps off
    the CLI's start-up) and regroups the tensors by device on every call.
    """

    def __init__(self, params, lr: float, weight_decay: float = 0.0,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.params = list(params)
        if not all(p.dtype.is_floating_point and p.device.type == "cpu" for p in self.params):
            raise ValueError("FusedAdam covers floating-point CPU parameters")
        self.lr, self.weight_decay, self.eps = float(lr), float(weight_decay), float(eps)
        self.beta1, self.beta2 = (float(b) for b in betas)
        self.exp_avgs = [torch.zeros_like(p, memory_format=torch.preserve_format)
                         for p in self.params]
        self.exp_avg_sqs = [torch.zeros_like(p, memory_format=torch.preserve_format)
                            for p in self.params]
        self.steps = [torch.zeros((), dtype=torch.float32) for _ in self.params]

    @torch.no_grad()
    def step(self) -> None:
        """One update of every parameter from its ``.grad`` (all must be set)."""
        grads = [p.grad for p in self.params]
        if any(g is None for g in grads):
            raise ValueError("FusedAdam.step needs every parameter's .grad")
        torch._foreach_add_(self.steps, 1)
        torch._fused_adam_(self.params, grads, self.exp_avgs, self.exp_avg_sqs, [], self.steps,
                           amsgrad=False, lr=self.lr, beta1=self.beta1, beta2=self.beta2,
                           weight_decay=self.weight_decay, eps=self.eps, maximize=False,
                           grad_scale=None, found_inf=None)


_GCN_OUT_SOURCE = r"""
#include <stdint.h>
#include <string.h>

#define L 16 /* lanes: each dot product is 16 partial sums, then summed across */
#define K 8  /* output columns per block: w is padded to a multiple of K rows */

/* z [n, d], m [n, d] or NULL, w [cp, d] (cp = c rounded up to K, padded rows zero), d % L == 0:
   hd = relu(z) * m; ev = relu(z) w^T [n, c]; tr = hd w^T [n, c] */
static void fwd_c(const float *restrict z, const float *restrict m, const float *restrict w,
                 int64_t n, int64_t d, int64_t c, float *restrict hd, float *restrict ev,
                 float *restrict tr) {
    for (int64_t i = 0; i < n; i++) {
        const float *zr = z + i * d;
        const float *mr = m ? m + i * d : 0;
        float *hr = hd + i * d;
        for (int64_t kb = 0; kb < c; kb += K) {
            float ae[K][L] = {{0}}, at[K][L] = {{0}};
            for (int64_t j = 0; j < d; j += L) {
                float h[L], x[L];
                for (int l = 0; l < L; l++) {
                    h[l] = zr[j + l] > 0.0f ? zr[j + l] : 0.0f;
                    x[l] = mr ? h[l] * mr[j + l] : h[l];
                }
                if (kb == 0)
                    for (int l = 0; l < L; l++) hr[j + l] = x[l];
                for (int k = 0; k < K; k++) {
                    const float *wk = w + (kb + k) * d + j;
                    for (int l = 0; l < L; l++) {
                        ae[k][l] += h[l] * wk[l];
                        at[k][l] += x[l] * wk[l];
                    }
                }
            }
            for (int k = 0; k < K && kb + k < c; k++) {
                float se = 0.0f, st = 0.0f;
                for (int l = 0; l < L; l++) {
                    se += ae[k][l];
                    st += at[k][l];
                }
                ev[i * c + kb + k] = se;
                tr[i * c + kb + k] = st;
            }
        }
    }
}

/* g [n, c], w [c, d], hd [n, d], m [n, d] or NULL, d % L == 0:
   gw = g^T hd [c, d] (rows summed in order i = 0..n-1);  dp = (hd > 0) ? (g w) * m : 0 [n, d] */
static void bwd_c(const float *restrict g, const float *restrict w, const float *restrict hd,
                 const float *restrict m, int64_t n, int64_t d, int64_t c, float *restrict gw,
                 float *restrict dp) {
    memset(gw, 0, c * d * sizeof(float));
    for (int64_t i = 0; i < n; i++) {
        const float *hr = hd + i * d;
        const float *mr = m ? m + i * d : 0;
        const float *gr = g + i * c;
        float *dr = dp + i * d;
        for (int64_t j = 0; j < d; j += L) {
            float acc[L] = {0}, h[L];
            for (int l = 0; l < L; l++) h[l] = hr[j + l];
            for (int64_t k = 0; k < c; k++) {
                const float gk = gr[k];
                const float *wk = w + k * d + j;
                float *gwk = gw + k * d + j;
                for (int l = 0; l < L; l++) {
                    acc[l] += gk * wk[l];
                    gwk[l] += gk * h[l];
                }
            }
            for (int l = 0; l < L; l++)
                dr[j + l] = h[l] > 0.0f ? (mr ? acc[l] * mr[j + l] : acc[l]) : 0.0f;
        }
    }
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
__attribute__((target("avx512f")))
static void fwd_512(const float *z, const float *m, const float *w, int64_t n, int64_t d,
                    int64_t c, float *hd, float *ev, float *tr) {
    const __m512 zero = _mm512_setzero_ps();
    for (int64_t i = 0; i < n; i++) {
        const float *zr = z + i * d, *mr = m ? m + i * d : 0;
        float *hr = hd + i * d;
        for (int64_t kb = 0; kb < c; kb += K) {
            __m512 ae[K], at[K];
            for (int k = 0; k < K; k++) ae[k] = at[k] = zero;
            for (int64_t j = 0; j < d; j += L) {
                __m512 h = _mm512_max_ps(_mm512_loadu_ps(zr + j), zero);
                __m512 x = mr ? _mm512_mul_ps(h, _mm512_loadu_ps(mr + j)) : h;
                if (kb == 0) _mm512_storeu_ps(hr + j, x);
                for (int k = 0; k < K; k++) {
                    __m512 wk = _mm512_loadu_ps(w + (kb + k) * d + j);
                    ae[k] = _mm512_fmadd_ps(h, wk, ae[k]);
                    at[k] = _mm512_fmadd_ps(x, wk, at[k]);
                }
            }
            for (int k = 0; k < K && kb + k < c; k++) {
                ev[i * c + kb + k] = _mm512_reduce_add_ps(ae[k]);
                tr[i * c + kb + k] = _mm512_reduce_add_ps(at[k]);
            }
        }
    }
}

__attribute__((target("avx512f")))
static void bwd_512(const float *g, const float *w, const float *hd, const float *m, int64_t n,
                    int64_t d, int64_t c, float *gw, float *dp) {
    const __m512 zero = _mm512_setzero_ps();
    memset(gw, 0, c * d * sizeof(float));
    for (int64_t i = 0; i < n; i++) {
        const float *hr = hd + i * d, *mr = m ? m + i * d : 0, *gr = g + i * c;
        float *dr = dp + i * d;
        for (int64_t j = 0; j < d; j += L) {
            __m512 h = _mm512_loadu_ps(hr + j), acc = zero;
            for (int64_t k = 0; k < c; k++) {
                __m512 gk = _mm512_set1_ps(gr[k]);
                acc = _mm512_fmadd_ps(gk, _mm512_loadu_ps(w + k * d + j), acc);
                float *gwk = gw + k * d + j;
                _mm512_storeu_ps(gwk, _mm512_fmadd_ps(gk, h, _mm512_loadu_ps(gwk)));
            }
            if (mr) acc = _mm512_mul_ps(acc, _mm512_loadu_ps(mr + j));
            _mm512_storeu_ps(dr + j, _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(h, zero, _CMP_GT_OQ), acc));
        }
    }
}
static int allow_512 = 1;
#define HAVE_512 (allow_512 && __builtin_cpu_supports("avx512f"))
#else
static int allow_512 = 0;
#define HAVE_512 0
#endif

/* tests: 0 runs the portable loops even where AVX-512 is there */
void gcn_out_allow_simd(int on) { allow_512 = on; }

void gcn_out_fwd(const float *z, const float *m, const float *w, int64_t n, int64_t d,
                 int64_t c, float *hd, float *ev, float *tr) {
#if defined(__x86_64__) && defined(__GNUC__)
    if (HAVE_512) { fwd_512(z, m, w, n, d, c, hd, ev, tr); return; }
#endif
    fwd_c(z, m, w, n, d, c, hd, ev, tr);
}

void gcn_out_bwd(const float *g, const float *w, const float *hd, const float *m, int64_t n,
                 int64_t d, int64_t c, float *gw, float *dp) {
#if defined(__x86_64__) && defined(__GNUC__)
    if (HAVE_512) { bwd_512(g, w, hd, m, n, d, c, gw, dp); return; }
#endif
    bwd_c(g, w, hd, m, n, d, c, gw, dp);
}
"""


def _declare_gcn_out(lib) -> None:
    import ctypes

    p, i64 = ctypes.c_void_p, ctypes.c_int64
    lib.gcn_out_fwd.argtypes = [p, p, p, i64, i64, i64, p, p, p]
    lib.gcn_out_fwd.restype = None
    lib.gcn_out_bwd.argtypes = [p, p, p, p, i64, i64, i64, p, p]
    lib.gcn_out_bwd.restype = None
    lib.gcn_out_allow_simd.argtypes = [ctypes.c_int]


def gcn_out_kernels():
    """The fused output-layer kernels (:class:`GCNOutLayer`), or None (no compiler, switched off)."""
    from fedticket.core import native

    return native.load("gcn_out", _GCN_OUT_SOURCE, _declare_gcn_out)


class GCNOutLayer:
    """A 2-layer GCN's hidden activation and narrow output product, fused into two C loops.

    Per training step the batched TEDDY loop needs, for ``z = Â X W1ᵀ`` ``[N, d]`` and ``W2``
    ``[c, d]`` with small ``c`` (Cora: 7), ``h = relu(z)``, ``hd = h·m`` (the dropout mask), the
    eval product ``h W2ᵀ``, the training product ``hd W2ᵀ``, and in the backward
    ``∂W2 = Gᵀ hd`` and ``∂z = (hd > 0) · (G W2) · m``: in torch ops four thin GEMMs (0.55-0.63 ms
    each on Cora, memory-bound at a quarter of the bandwidth an element-wise pass gets) and four
    element-wise passes. Here ``forward`` reads ``z`` and ``m`` once, ``backward`` reads ``hd``
    and ``m`` once (AVX-512 loops where the CPU has them, portable C loops otherwise). Sums run in
    a fixed order of their own (16 partial sums, then across them; ``∂W2`` row by row), so the
    results equal the torch ops' to float rounding and do not depend on the thread.
    """

    def __init__(self, lib):
        self.lib = lib

    @staticmethod
    def usable(z: Tensor, w: Tensor) -> bool:
        """float32 on the CPU, the hidden width a multiple of 16 (the kernels' lanes)."""
        return (z.dtype == w.dtype == torch.float32 and z.device.type == "cpu"
                and z.dim() == 2 and z.shape[1] % 16 == 0)

    def forward(self, z: Tensor, m: Tensor | None, w: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(relu(z) W2ᵀ, hd W2ᵀ, hd)`` with ``hd = relu(z)·m`` (``m`` None: no dropout)."""
        z, w = z.contiguous(), w.contiguous()
        m = m.contiguous() if m is not None else None
        n, d = z.shape
        c = w.shape[0]
        if c % 8:  # rows padded to the kernel's block of 8 output columns
            w = torch.cat([w, w.new_zeros(8 - c % 8, d)])
        hd = torch.empty_like(z)
        ev = torch.empty(n, c, dtype=z.dtype)
        tr = torch.empty(n, c, dtype=z.dtype)
        self.lib.gcn_out_fwd(z.data_ptr(), m.data_ptr() if m is not None else None,
                             w.data_ptr(), n, d, c, hd.data_ptr(), ev.data_ptr(), tr.data_ptr())
        return ev, tr, hd

    def backward(self, g: Tensor, w: Tensor, hd: Tensor,
                 m: Tensor | None) -> tuple[Tensor, Tensor]:
        """``(Gᵀ hd, (hd > 0)·(G W2)·m)``: W2's gradient and the hidden pre-activation's."""
        g, w = g.contiguous(), w.contiguous()
        m = m.contiguous() if m is not None else None
        n, d = hd.shape
        c = w.shape[0]
        gw = torch.empty(c, d, dtype=hd.dtype)
        dp = torch.empty_like(hd)
        self.lib.gcn_out_bwd(g.data_ptr(), w.data_ptr(), hd.data_ptr(),
                             m.data_ptr() if m is not None else None, n, d, c, gw.data_ptr(),
                             dp.data_ptr())
        return gw, dp
