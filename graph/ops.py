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

import ctypes

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


class Split:
    """One kernel call as ``parts`` calls over disjoint row or column ranges, run on ``pool``.

    For the batched loop's single level (the dense teacher), whose 200 steps would otherwise run
    on one core while the other idles. ``ctypes`` releases the GIL, so the parts run in parallel;
    every element is still computed by the same loop in the same order (rows are independent;
    a column's sums run over the rows in order), so the numbers do not depend on ``parts``.
    """

    def __init__(self, pool, parts: int):
        self.pool, self.parts = pool, int(parts)

    def ranges(self, n: int, align: int = 1) -> list[tuple[int, int]]:
        """``parts`` contiguous ranges covering ``0..n`` (bounds multiples of ``align``)."""
        step = -(-n // (self.parts * align)) * align
        return [(a, min(n, a + step)) for a in range(0, n, step)]

    def run(self, fn, ranges) -> None:
        list(self.pool.map(lambda r: fn(*r), ranges))  # list(): re-raises a part's error


def _run(split: Split | None, fn, n: int, align: int = 1) -> None:
    if split is None or n < 2 * align:
        fn(0, n)
    else:
        split.run(fn, split.ranges(n, align))


class BagMatrix:
    """A fixed sparse matrix ``M [R, C]`` whose product ``M @ H`` is one ``embedding_bag``.

    Row ``i`` of ``M @ H`` is ``Σ_k v_k · H[col_k]`` over row ``i``'s stored entries: exactly an
    embedding bag with per-sample weights. On this project's CPU that kernel (a gather and a
    weighted sum, no output zero-fill or layout copy) took 1.5 ms for Cora's ``X @ W1``
    (49k non-zeros x 512 channels) against 4.1 ms for the CSR product, and 0.75 ms against 2.9 ms
    for ``Â @ H``. Sums are taken in another order than the CSR kernel's, so the results agree
    with it to float rounding (about 1e-7 relative), not bit for bit.

    Where the bag kernels build (:func:`bag_kernels`: AVX-512, float32, a width that is a
    multiple of 16) the product runs as their C loop instead, which sums in the embedding bag's
    own order (one ``fma`` per stored entry, from +0, in stored order: what fbgemm's
    ``EmbeddingSpMDM``, torch's x86 kernel, does), so the result is the same to the bit, about
    1.6x faster on ``X @ W1`` (its rows stay in registers in blocks of 128 channels).
    """

    def __init__(self, csr: Tensor, kernels: bool = True):
        if csr.layout != torch.sparse_csr:
            raise ValueError(f"BagMatrix needs a CSR tensor, got layout {csr.layout}")
        self.shape = tuple(csr.shape)
        self.index = csr.col_indices().contiguous()
        self.offsets = csr.crow_indices()[:-1].contiguous()
        self.weights = csr.values().contiguous()
        lib = bag_kernels() if kernels else None
        self.lib = lib if lib is not None and (
            self.index.dtype == self.offsets.dtype == torch.int64
            and self.weights.dtype == torch.float32 and self.weights.device.type == "cpu") else None

    def _fast(self, h: Tensor) -> bool:
        return (self.lib is not None and h.dtype == torch.float32 and h.device.type == "cpu"
                and h.shape[1] % 16 == 0)

    def __matmul__(self, h: Tensor) -> Tensor:
        return self.mm(h)

    def mm(self, h: Tensor, split: Split | None = None) -> Tensor:
        """``self @ h``; ``split``: the kernel's rows over threads (the same numbers)."""
        if h.dim() != 2 or h.size(0) != self.shape[1]:
            raise ValueError(f"cannot multiply a {self.shape} matrix by {tuple(h.shape)}")
        h = h.contiguous()
        if self._fast(h):
            d = h.shape[1]
            out = torch.empty(self.shape[0], d, dtype=h.dtype)
            off, nnz = self.offsets, self.index.numel()

            def rows(a: int, b: int) -> None:  # rows a..b-1: their offsets, the end of row b-1
                end = int(off[b]) if b < self.shape[0] else nnz
                self.lib.bag_mm(off.data_ptr() + 8 * a, b - a, end, self.index.data_ptr(),
                                self.weights.data_ptr(), h.data_ptr(), d,
                                out.data_ptr() + 4 * a * d)

            _run(split, rows, self.shape[0])
            return out
        return torch.nn.functional.embedding_bag(self.index, h, self.offsets,
                                                 mode="sum", per_sample_weights=self.weights)


def transposed_chain(x: BagMatrix, xt: BagMatrix, at: BagMatrix, g: Tensor,
                     split: Split | None = None) -> Tensor:
    """``Xᵀ (Âᵀ G)``, the GCN's first-layer weight gradient, without storing ``Âᵀ G``.

    ``xt`` is ``X``'s transpose (``Xᵀ`` as its own :class:`BagMatrix`). As two bags,
    ``xt @ (at @ g)`` gathers, for each of ``Xᵀ``'s 49k entries on Cora, a 2 kB row of the 5.5 MB
    ``Âᵀ G``, which does not stay in a core's cache (4.9 ms per call here). The bag kernels
    instead walk ``X``'s rows in order: row ``i`` of ``Âᵀ G`` is summed in registers (as
    ``at @ g`` sums it) and at once added into the rows of the 2.9 MB result that ``X``'s row
    ``i`` names (``fma``, ``i`` ascending: the order in which the bag of ``Xᵀ``, whose rows list
    ``X``'s rows ascending, sums them), so the result is the two bags' to the bit, in 3.0 ms.
    ``split``: its columns over threads (the same numbers).
    """
    if g.dim() != 2 or at.shape[1] != g.shape[0] or x.shape[0] != at.shape[0]:
        raise ValueError(f"cannot chain {x.shape}ᵀ, {at.shape} and {tuple(g.shape)}")
    g = g.contiguous()
    if x._fast(g) and at._fast(g):
        out = torch.empty(x.shape[1], g.shape[1], dtype=g.dtype)

        def cols(j0: int, j1: int) -> None:
            x.lib.bag_chain(at.offsets.data_ptr(), at.index.data_ptr(), at.weights.data_ptr(),
                            at.index.numel(), x.offsets.data_ptr(), x.index.data_ptr(),
                            x.weights.data_ptr(), x.index.numel(), x.shape[0], g.data_ptr(),
                            g.shape[1], x.shape[1], out.data_ptr(), j0, j1)

        _run(split, cols, g.shape[1], 16)
        return out
    return xt @ (at @ g)


_BAG_ROW = r"""
#define NB 8 /* 16-float vectors per column block: 128 channels in 8 registers */
/* row i of a CSR matrix times h [., d] (entries k in [s, e)) into o [d], as bag_512 sums it */
__attribute__((target("avx512f")))
static inline void bag_row_512(int64_t s, int64_t e, const int64_t *idx, const float *w,
                               const float *h, int64_t d, float *o) {
    int64_t j = 0;
    for (; j + 16 * NB <= d; j += 16 * NB) {
        __m512 acc[NB];
        for (int v = 0; v < NB; v++) acc[v] = _mm512_setzero_ps();
        for (int64_t k = s; k < e; k++) {
            const float *hr = h + idx[k] * d + j;
            const __m512 wk = _mm512_set1_ps(w[k]);
            for (int v = 0; v < NB; v++)
                acc[v] = _mm512_fmadd_ps(wk, _mm512_loadu_ps(hr + 16 * v), acc[v]);
        }
        for (int v = 0; v < NB; v++) _mm512_storeu_ps(o + j + 16 * v, acc[v]);
    }
    for (; j < d; j += 16) {
        __m512 acc = _mm512_setzero_ps();
        for (int64_t k = s; k < e; k++)
            acc = _mm512_fmadd_ps(_mm512_set1_ps(w[k]), _mm512_loadu_ps(h + idx[k] * d + j), acc);
        _mm512_storeu_ps(o + j, acc);
    }
}
"""

_BAG_SOURCE = r"""
#include <stdint.h>
#include <string.h>

/* A sparse matrix (CSR rows: off [rows] start offsets, idx/w [nnz] columns and values) times a
   dense h [., d] in the sum order of torch's embedding_bag on x86 (fbgemm's EmbeddingSpMDM):
   out[i] = fma(w_k, h[idx_k], ...) over row i's entries in stored order, starting from +0.
   Columns are independent, so blocking them (NB vectors of 16) keeps every element's chain. */

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

""" + _BAG_ROW + r"""
__attribute__((target("avx512f")))
static void bag_512(const int64_t *off, int64_t rows, int64_t nnz, const int64_t *idx,
                    const float *w, const float *h, int64_t d, float *out) {
    for (int64_t i = 0; i < rows; i++)
        bag_row_512(off[i], i + 1 < rows ? off[i + 1] : nnz, idx, w, h, d, out + i * d);
}

/* out [m, d] = X^T (A^T g): for X's rows i ascending, t = row i of A^T g (as bag_512 sums it,
   in registers), then out[c] = fma(x_ic, t, out[c]) for row i's columns c. */
__attribute__((target("avx512f")))
static void chain_512(const int64_t *aoff, const int64_t *aidx, const float *aw, int64_t annz,
                      const int64_t *xoff, const int64_t *xidx, const float *xw, int64_t xnnz,
                      int64_t n, const float *g, int64_t d, int64_t m, float *out, int64_t j0,
                      int64_t j1) {
    for (int64_t r = 0; r < m; r++) memset(out + r * d + j0, 0, (j1 - j0) * sizeof(float));
    for (int64_t i = 0; i < n; i++) {
        int64_t as = aoff[i], ae = i + 1 < n ? aoff[i + 1] : annz;
        int64_t xs = xoff[i], xe = i + 1 < n ? xoff[i + 1] : xnnz;
        int64_t j = j0;
        for (; j + 16 * NB <= j1; j += 16 * NB) {
            __m512 t[NB];
            for (int v = 0; v < NB; v++) t[v] = _mm512_setzero_ps();
            for (int64_t k = as; k < ae; k++) {
                const float *r = g + aidx[k] * d + j;
                const __m512 wk = _mm512_set1_ps(aw[k]);
                for (int v = 0; v < NB; v++)
                    t[v] = _mm512_fmadd_ps(wk, _mm512_loadu_ps(r + 16 * v), t[v]);
            }
            for (int64_t k = xs; k < xe; k++) {
                float *o = out + xidx[k] * d + j;
                const __m512 wk = _mm512_set1_ps(xw[k]);
                for (int v = 0; v < NB; v++)
                    _mm512_storeu_ps(o + 16 * v,
                                     _mm512_fmadd_ps(wk, t[v], _mm512_loadu_ps(o + 16 * v)));
            }
        }
        for (; j < j1; j += 16) {
            __m512 t = _mm512_setzero_ps();
            for (int64_t k = as; k < ae; k++)
                t = _mm512_fmadd_ps(_mm512_set1_ps(aw[k]), _mm512_loadu_ps(g + aidx[k] * d + j), t);
            for (int64_t k = xs; k < xe; k++) {
                float *o = out + xidx[k] * d + j;
                _mm512_storeu_ps(o, _mm512_fmadd_ps(_mm512_set1_ps(xw[k]), t, _mm512_loadu_ps(o)));
            }
        }
    }
}

int bag_simd(void) { return __builtin_cpu_supports("avx512f"); }

/* callers check bag_simd() and d % 16 == 0 first; bag_chain: columns j0 <= j < j1 of out
   (multiples of 16; each column's sums do not depend on the others, so threads may split them) */
void bag_mm(const int64_t *off, int64_t rows, int64_t nnz, const int64_t *idx, const float *w,
            const float *h, int64_t d, float *out) {
    bag_512(off, rows, nnz, idx, w, h, d, out);
}

void bag_chain(const int64_t *aoff, const int64_t *aidx, const float *aw, int64_t annz,
               const int64_t *xoff, const int64_t *xidx, const float *xw, int64_t xnnz,
               int64_t n, const float *g, int64_t d, int64_t m, float *out, int64_t j0,
               int64_t j1) {
    chain_512(aoff, aidx, aw, annz, xoff, xidx, xw, xnnz, n, g, d, m, out, j0, j1);
}
#else
/* elsewhere torch's embedding_bag runs (its own sum order there) */
int bag_simd(void) { return 0; }
void bag_mm(void) {}
void bag_chain(void) {}
#endif
"""


def _declare_bag(lib) -> None:
    p, i64 = ctypes.c_void_p, ctypes.c_int64
    lib.bag_simd.argtypes = []
    lib.bag_simd.restype = ctypes.c_int
    lib.bag_mm.argtypes = [p, i64, i64, p, p, p, i64, p]
    lib.bag_mm.restype = None
    lib.bag_chain.argtypes = [p, p, p, i64, p, p, p, i64, i64, p, i64, i64, p, i64, i64]
    lib.bag_chain.restype = None


def bag_kernels():
    """The C loops of :class:`BagMatrix` and :func:`transposed_chain`, or None: no compiler,
    ``FEDTICKET_NATIVE=0``, or no AVX-512 (there the portable loops would lose to fbgemm, and
    could not match its sums either), so torch's embedding bag runs."""
    from fedticket.core import native

    lib = native.load("bag", _BAG_SOURCE, _declare_bag)
    return lib if lib is not None and lib.bag_simd() else None


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
        # as Adam.step: a parameter without a gradient is skipped, its step counter too
        idx = [i for i, p in enumerate(self.params) if p.grad is not None]
        if not idx:
            return
        params = [self.params[i] for i in idx]
        steps = [self.steps[i] for i in idx]
        torch._foreach_add_(steps, 1)
        torch._fused_adam_(params, [p.grad for p in params], [self.exp_avgs[i] for i in idx],
                           [self.exp_avg_sqs[i] for i in idx], [], steps,
                           amsgrad=False, lr=self.lr, beta1=self.beta1, beta2=self.beta2,
                           weight_decay=self.weight_decay, eps=self.eps, maximize=False,
                           grad_scale=None, found_inf=None)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()


_GCN_OUT_SOURCE = r"""
#include <stdint.h>
#include <string.h>

#define L 16 /* lanes: each dot product is 16 partial sums, then summed across */
#define K 8  /* output columns per block: w is padded to a multiple of K rows */

/* The dropout mask travels as bits (bit l of word q: entry 16q + l kept) plus its one nonzero
   value s; hd = relu(z) * m is recomputed from z where needed instead of being stored:
   hd = bit ? relu(z) * s : 0, the very value relu(z) * m has for m in {0, s}. */

/* m [t] (t % L == 0) -> bits [t / L], *scale = s; returns 1 when every entry is 0 or s */
static int pack_c(const float *restrict m, int64_t t, uint16_t *restrict bits, float s) {
    int bad = 0;
    for (int64_t q = 0; q < t / L; q++) {
        uint16_t b = 0;
        for (int l = 0; l < L; l++) {
            float v = m[q * L + l];
            b |= (uint16_t)((v != 0.0f) << l);
            bad |= (v != 0.0f) & (v != s);
        }
        bits[q] = b;
    }
    return !bad;
}

/* z [n, d], bits [n, d / L] or NULL (no dropout), w [cp, d] (cp = c rounded up to K, padded
   rows zero), d % L == 0: ev = relu(z) w^T [n, c]; tr = hd w^T [n, c] */
static void fwd_c(const float *restrict z, const uint16_t *restrict bits, float s,
                  const float *restrict w, int64_t n, int64_t d, int64_t c, float *restrict ev,
                  float *restrict tr) {
    for (int64_t i = 0; i < n; i++) {
        const float *zr = z + i * d;
        const uint16_t *br = bits ? bits + i * (d / L) : 0;
        for (int64_t kb = 0; kb < c; kb += K) {
            float ae[K][L] = {{0}}, at[K][L] = {{0}};
            for (int64_t j = 0; j < d; j += L) {
                float h[L], x[L];
                const unsigned b = br ? br[j / L] : 0xffffu;
                for (int l = 0; l < L; l++) {
                    h[l] = zr[j + l] > 0.0f ? zr[j + l] : 0.0f;
                    x[l] = br ? ((b >> l) & 1u ? h[l] * s : 0.0f) : h[l];
                }
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

/* g [n, c], w [c, d], z [n, d], bits as above, d % L == 0:
   gw = g^T hd [c, d] (rows summed in order i = 0..n-1);  dp = (hd > 0) ? (g w) * s : 0 [n, d]
   (where hd > 0 the mask is s; without dropout no factor) */
static void bwd_c(const float *restrict g, const float *restrict w, const float *restrict z,
                  const uint16_t *restrict bits, float s, int64_t n, int64_t d, int64_t c,
                  float *restrict gw, float *restrict dp, int64_t j0, int64_t j1) {
    for (int64_t k = 0; k < c; k++) memset(gw + k * d + j0, 0, (j1 - j0) * sizeof(float));
    for (int64_t i = 0; i < n; i++) {
        const float *zr = z + i * d;
        const uint16_t *br = bits ? bits + i * (d / L) : 0;
        const float *gr = g + i * c;
        float *dr = dp + i * d;
        for (int64_t j = j0; j < j1; j += L) {
            float acc[L] = {0}, h[L];
            const unsigned b = br ? br[j / L] : 0xffffu;
            for (int l = 0; l < L; l++) {
                float r = zr[j + l] > 0.0f ? zr[j + l] : 0.0f;
                h[l] = br ? ((b >> l) & 1u ? r * s : 0.0f) : r;
            }
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
                dr[j + l] = h[l] > 0.0f ? (br ? acc[l] * s : acc[l]) : 0.0f;
        }
    }
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
__attribute__((target("avx512f")))
static int pack_512(const float *m, int64_t t, uint16_t *bits, float s) {
    const __m512 zero = _mm512_setzero_ps(), vs = _mm512_set1_ps(s);
    __mmask16 bad = 0;
    for (int64_t q = 0; q < t / L; q++) {
        __m512 v = _mm512_loadu_ps(m + q * L);
        __mmask16 nz = _mm512_cmp_ps_mask(v, zero, _CMP_NEQ_UQ);
        bad |= nz & _mm512_cmp_ps_mask(v, vs, _CMP_NEQ_UQ);
        bits[q] = (uint16_t)nz;
    }
    return bad == 0;
}

/* row i of fwd_512 (zr, br: that row's z and bits) */
__attribute__((target("avx512f")))
static inline void fwd_row_512(const float *zr, const uint16_t *br, float s, const float *w,
                               int64_t d, int64_t c, float *evr, float *trr) {
    const __m512 zero = _mm512_setzero_ps(), vs = _mm512_set1_ps(s);
    for (int64_t kb = 0; kb < c; kb += K) {
        __m512 ae[K], at[K];
        for (int k = 0; k < K; k++) ae[k] = at[k] = zero;
        for (int64_t j = 0; j < d; j += L) {
            __m512 h = _mm512_max_ps(_mm512_loadu_ps(zr + j), zero);
            __m512 x = br ? _mm512_maskz_mul_ps(br[j / L], h, vs) : h;
            for (int k = 0; k < K; k++) {
                __m512 wk = _mm512_loadu_ps(w + (kb + k) * d + j);
                ae[k] = _mm512_fmadd_ps(h, wk, ae[k]);
                at[k] = _mm512_fmadd_ps(x, wk, at[k]);
            }
        }
        for (int k = 0; k < K && kb + k < c; k++) {
            evr[kb + k] = _mm512_reduce_add_ps(ae[k]);
            trr[kb + k] = _mm512_reduce_add_ps(at[k]);
        }
    }
}

__attribute__((target("avx512f")))
static void fwd_512(const float *z, const uint16_t *bits, float s, const float *w, int64_t n,
                    int64_t d, int64_t c, float *ev, float *tr) {
    for (int64_t i = 0; i < n; i++)
        fwd_row_512(z + i * d, bits ? bits + i * (d / L) : 0, s, w, d, c, ev + i * c, tr + i * c);
}

""" + _BAG_ROW + r"""
/* z = A y (A's CSR rows: off, idx, aw; as BagMatrix's bag_512 sums them), and each row of z,
   while it is still in L1, through fwd_row_512: the two calls' numbers, one read of z fewer */
__attribute__((target("avx512f")))
static void agg_fwd_512(const int64_t *off, int64_t nnz, const int64_t *idx, const float *aw,
                        const float *y, const uint16_t *bits, float s, const float *w, int64_t n,
                        int64_t d, int64_t c, float *z, float *ev, float *tr) {
    for (int64_t i = 0; i < n; i++) {
        bag_row_512(off[i], i + 1 < n ? off[i + 1] : nnz, idx, aw, y, d, z + i * d);
        fwd_row_512(z + i * d, bits ? bits + i * (d / L) : 0, s, w, d, c, ev + i * c, tr + i * c);
    }
}

__attribute__((target("avx512f")))
static void bwd_512(const float *g, const float *w, const float *z, const uint16_t *bits,
                    float s, int64_t n, int64_t d, int64_t c, float *gw, float *dp, int64_t j0,
                    int64_t j1) {
    const __m512 zero = _mm512_setzero_ps(), vs = _mm512_set1_ps(s);
    for (int64_t k = 0; k < c; k++) memset(gw + k * d + j0, 0, (j1 - j0) * sizeof(float));
    for (int64_t i = 0; i < n; i++) {
        const float *zr = z + i * d, *gr = g + i * c;
        const uint16_t *br = bits ? bits + i * (d / L) : 0;
        float *dr = dp + i * d;
        for (int64_t j = j0; j < j1; j += L) {
            __m512 h = _mm512_max_ps(_mm512_loadu_ps(zr + j), zero), acc = zero;
            if (br) h = _mm512_maskz_mul_ps(br[j / L], h, vs);
            for (int64_t k = 0; k < c; k++) {
                __m512 gk = _mm512_set1_ps(gr[k]);
                acc = _mm512_fmadd_ps(gk, _mm512_loadu_ps(w + k * d + j), acc);
                float *gwk = gw + k * d + j;
                _mm512_storeu_ps(gwk, _mm512_fmadd_ps(gk, h, _mm512_loadu_ps(gwk)));
            }
            if (br) acc = _mm512_mul_ps(acc, vs);
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

/* m [t] -> bits, *scale: returns 1 when m is a dropout mask (every entry 0 or one value) */
int gcn_out_pack(const float *m, int64_t t, uint16_t *bits, float *scale) {
    float s = 0.0f;
    for (int64_t i = 0; i < t; i++)
        if (m[i] != 0.0f) { s = m[i]; break; }
    *scale = s;
#if defined(__x86_64__) && defined(__GNUC__)
    if (HAVE_512) return pack_512(m, t, bits, s);
#endif
    return pack_c(m, t, bits, s);
}

void gcn_out_fwd(const float *z, const uint16_t *bits, float s, const float *w, int64_t n,
                 int64_t d, int64_t c, float *ev, float *tr) {
#if defined(__x86_64__) && defined(__GNUC__)
    if (HAVE_512) { fwd_512(z, bits, s, w, n, d, c, ev, tr); return; }
#endif
    fwd_c(z, bits, s, w, n, d, c, ev, tr);
}

/* returns 0 (nothing done) where the AVX-512 loops cannot run: then the caller runs the bag and
   gcn_out_fwd */
int gcn_out_agg_fwd(const int64_t *off, int64_t nnz, const int64_t *idx, const float *aw,
                    const float *y, const uint16_t *bits, float s, const float *w, int64_t n,
                    int64_t d, int64_t c, float *z, float *ev, float *tr) {
#if defined(__x86_64__) && defined(__GNUC__)
    if (HAVE_512) { agg_fwd_512(off, nnz, idx, aw, y, bits, s, w, n, d, c, z, ev, tr); return 1; }
#endif
    return 0;
}

/* columns j0 <= j < j1 (multiples of L) of gw and dp: each column's sums stay in row order, so
   splitting the columns over threads does not move a bit */
void gcn_out_bwd(const float *g, const float *w, const float *z, const uint16_t *bits, float s,
                 int64_t n, int64_t d, int64_t c, float *gw, float *dp, int64_t j0, int64_t j1) {
#if defined(__x86_64__) && defined(__GNUC__)
    if (HAVE_512) { bwd_512(g, w, z, bits, s, n, d, c, gw, dp, j0, j1); return; }
#endif
    bwd_c(g, w, z, bits, s, n, d, c, gw, dp, j0, j1);
}
"""


def _declare_gcn_out(lib) -> None:
    p, i64, f32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float
    lib.gcn_out_pack.argtypes = [p, i64, p, p]
    lib.gcn_out_pack.restype = ctypes.c_int
    lib.gcn_out_fwd.argtypes = [p, p, f32, p, i64, i64, i64, p, p]
    lib.gcn_out_fwd.restype = None
    lib.gcn_out_bwd.argtypes = [p, p, p, p, f32, i64, i64, i64, p, p, i64, i64]
    lib.gcn_out_bwd.restype = None
    lib.gcn_out_agg_fwd.argtypes = [p, i64, p, p, p, p, f32, p, i64, i64, i64, p, p, p]
    lib.gcn_out_agg_fwd.restype = ctypes.c_int
    lib.gcn_out_allow_simd.argtypes = [ctypes.c_int]


def gcn_out_kernels():
    """The fused output-layer kernels (:class:`GCNOutLayer`), or None (no compiler, switched off)."""
    from fedticket.core import native

    return native.load("gcn_out", _GCN_OUT_SOURCE, _declare_gcn_out)


class DropoutBits:
    """An inverted-dropout mask ``m`` (every entry 0 or one value ``scale``) as one bit per entry.

    Cora's ``[2708, 512]`` float mask is 5.5 MB, read by every level twice per step; its bits are
    173 kB, which stay in cache for all levels of the step.
    """

    def __init__(self, bits: Tensor, scale: float, shape: tuple[int, int]):
        self.bits, self.scale, self.shape = bits, float(scale), tuple(shape)


class GCNOutLayer:
    """A 2-layer GCN's hidden activation and narrow output product, fused into two C loops.

    Per training step the batched TEDDY loop needs, for ``z = Â X W1ᵀ`` ``[N, d]`` and ``W2``
    ``[c, d]`` with small ``c`` (Cora: 7), ``h = relu(z)``, ``hd = h·m`` (the dropout mask), the
    eval product ``h W2ᵀ``, the training product ``hd W2ᵀ``, and in the backward
    ``∂W2 = Gᵀ hd`` and ``∂z = (hd > 0) · (G W2) · m``: in torch ops four thin GEMMs (0.55-0.63 ms
    each on Cora, memory-bound at a quarter of the bandwidth an element-wise pass gets) and four
    element-wise passes. Here ``forward`` and ``backward`` each read ``z`` once and nothing else
    of that size: the mask comes as bits (:meth:`pack`, once per step for all levels), ``hd`` is
    never stored but recomputed from ``z`` and the bits (``bit ? relu(z)·s : 0``, the value
    ``relu(z)·m`` has), and where ``hd > 0`` the mask is ``s``, so ``∂z`` needs no mask read
    either (AVX-512 loops where the CPU has them, portable C loops otherwise). Sums run in a fixed
    order of their own (16 partial sums, then across them; ``∂W2`` row by row), so the results
    equal the torch ops' to float rounding and do not depend on the thread.
    """

    def __init__(self, lib):
        self.lib = lib

    @staticmethod
    def usable(z: Tensor, w: Tensor) -> bool:
        """float32 on the CPU, the hidden width a multiple of 16 (the kernels' lanes)."""
        return (z.dtype == w.dtype == torch.float32 and z.device.type == "cpu"
                and z.dim() == 2 and z.shape[1] % 16 == 0)

    def pack(self, m: Tensor) -> DropoutBits | None:
        """``m``'s bits, or None when ``m`` is not a dropout mask (entries other than 0 and one
        value: then the torch ops must run)."""
        m = m.contiguous()
        if m.dtype != torch.float32 or m.dim() != 2 or m.shape[1] % 16:
            return None
        bits = torch.empty(m.numel() // 16, dtype=torch.int16)
        scale = ctypes.c_float()
        ok = self.lib.gcn_out_pack(m.data_ptr(), m.numel(), bits.data_ptr(), ctypes.byref(scale))
        return DropoutBits(bits, scale.value, m.shape) if ok else None

    def _bits(self, mask: DropoutBits | None, shape: tuple) -> tuple[int | None, float]:
        if mask is None:
            return None, 1.0
        if mask.shape != tuple(shape):
            raise ValueError(f"dropout bits of shape {mask.shape} for activations {tuple(shape)}")
        return mask.bits.data_ptr(), mask.scale

    @staticmethod
    def _padded(w: Tensor) -> Tensor:
        c, d = w.shape
        if c % 8:  # rows padded to the kernel's block of 8 output columns
            w = torch.cat([w, w.new_zeros(8 - c % 8, d)])
        return w

    def aggregate_forward(self, a: "BagMatrix", y: Tensor, mask: DropoutBits | None, w: Tensor,
                          split: Split | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """``z = a @ y`` and :meth:`forward` of it, ``(z, relu(z) W2ᵀ, hd W2ᵀ)``, the very numbers
        of the two calls; with the AVX-512 loops in one pass, each row of ``z`` going through the
        output layer right after it is summed (still in L1), which spares a read of ``z``.
        ``split``: its rows over threads (the same numbers)."""
        y, w = y.contiguous(), w.contiguous()
        n, c, d = a.shape[0], w.shape[0], y.shape[1]
        if a._fast(y) and y.shape[0] == a.shape[1] and w.shape[1] == d:
            bits, scale = self._bits(mask, (n, d))
            wp = self._padded(w)  # held: the kernel reads it through a raw pointer
            z = torch.empty(n, d, dtype=y.dtype)
            ev = torch.empty(n, c, dtype=y.dtype)
            tr = torch.empty(n, c, dtype=y.dtype)
            off, nnz, done = a.offsets, a.index.numel(), []

            def rows(r0: int, r1: int) -> None:  # pointers moved to row r0 (bits: d/16 per row)
                end = int(off[r1]) if r1 < n else nnz
                done.append(self.lib.gcn_out_agg_fwd(
                    off.data_ptr() + 8 * r0, end, a.index.data_ptr(), a.weights.data_ptr(),
                    y.data_ptr(), None if bits is None else bits + 2 * r0 * (d // 16), scale,
                    wp.data_ptr(), r1 - r0, d, c, z.data_ptr() + 4 * r0 * d,
                    ev.data_ptr() + 4 * r0 * c, tr.data_ptr() + 4 * r0 * c))

            _run(split, rows, n)
            if all(done):
                return z, ev, tr
        z = a.mm(y, split)
        return (z, *self.forward(z, mask, w))

    def forward(self, z: Tensor, mask: DropoutBits | None, w: Tensor) -> tuple[Tensor, Tensor]:
        """``(relu(z) W2ᵀ, hd W2ᵀ)`` with ``hd = relu(z)·m`` (``mask`` None: no dropout)."""
        z, w = z.contiguous(), w.contiguous()
        n, d = z.shape
        c = w.shape[0]
        w = self._padded(w)
        bits, scale = self._bits(mask, z.shape)
        ev = torch.empty(n, c, dtype=z.dtype)
        tr = torch.empty(n, c, dtype=z.dtype)
        self.lib.gcn_out_fwd(z.data_ptr(), bits, scale, w.data_ptr(), n, d, c, ev.data_ptr(),
                             tr.data_ptr())
        return ev, tr

    def backward(self, g: Tensor, w: Tensor, z: Tensor, mask: DropoutBits | None,
                 split: Split | None = None) -> tuple[Tensor, Tensor]:
        """``(Gᵀ hd, (hd > 0)·(G W2)·m)``: W2's gradient and the hidden pre-activation's, from the
        ``z`` and ``mask`` that :meth:`forward` got; ``split``: the columns over threads."""
        g, w, z = g.contiguous(), w.contiguous(), z.contiguous()
        n, d = z.shape
        c = w.shape[0]
        bits, scale = self._bits(mask, z.shape)
        gw = torch.empty(c, d, dtype=z.dtype)
        dp = torch.empty_like(z)
        _run(split, lambda j0, j1: self.lib.gcn_out_bwd(
            g.data_ptr(), w.data_ptr(), z.data_ptr(), bits, scale, n, d, c, gw.data_ptr(),
            dp.data_ptr(), j0, j1), d, 16)
        return gw, dp
