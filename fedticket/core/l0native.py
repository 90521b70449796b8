"""The ℓ0 projection's two full passes as a tiny C kernel, built on first use, with a torch fallback.

Per TEDDY step the projection of :class:`fedticket.core.l0ball.L0Ball` over Cora's 738k
parameters costs, in torch ops, about ten passes over the buffer: ``abs``, two compare-and-count
passes for the band's edges, two more for the band mask, the band's compaction (``nonzero``,
1.0-1.3 ms alone: a quarter of the projection), the keep mask and the multiply. Two loops do the
same work:

* ``l0_band``: one read of ``v``: counts ``|v| > hi`` and compacts ``lo < |v| <= hi`` (the band, in
  index order, the very values ``a[(a > lo) & (a <= hi)]`` gives) into a buffer;
* ``l0_apply``: one read and one write of ``v``: ``keep = |v| >= t``, ``v *= keep`` (a multiply, as
  ``v.mul_(keep)``: the same signed zeros), returns the kept count.

The thresholds are compared in float32, as torch compares a float32 tensor with a Python scalar,
so the kept set is the torch path's exactly (``tests/core/test_l0native.py``). Built and loaded by
:mod:`fedticket.core.native` (ctypes releases the GIL, so level worker threads project in
parallel); with no compiler, a failed build, a non-float32 or non-contiguous buffer, or
``FEDTICKET_NATIVE=0``, the projection runs the torch ops instead.
"""

from __future__ import annotations

import ctypes

import torch
from torch import Tensor

from fedticket.core import native

SOURCE = r"""
#include <stdint.h>
#include <math.h>

/* Portable loops; restrict: the bool/char stores may otherwise alias v and block vectorizing. */
static int64_t band_c(const float *restrict v, int64_t i, int64_t n, float lo, float hi,
                      float *restrict band, int64_t nb, int64_t *restrict above_hi) {
    int64_t c = 0;
    for (; i < n; i++) {
        float a = fabsf(v[i]);
        c += a > hi;
        band[nb] = a;
        nb += (a > lo) & (a <= hi);
    }
    *above_hi += c;
    return nb;
}

static int64_t apply_c(float *restrict v, uint8_t *restrict keep, int64_t i, int64_t n, float t) {
    int64_t kept = 0;
    for (; i < n; i++) {
        uint8_t k = fabsf(v[i]) >= t;
        keep[i] = k;
        v[i] = v[i] * (float)k;
        kept += k;
    }
    return kept;
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
/* 16 lanes at a time; the band is packed with a register compress and an unaligned store
   (the buffer has 16 spare slots), not the memory form of vcompressps, which is slow on Zen 4. */
__attribute__((target("avx512f")))
static int64_t band_512(const float *v, int64_t n, float lo, float hi, float *band,
                        int64_t *above_hi) {
    const __m512 vlo = _mm512_set1_ps(lo), vhi = _mm512_set1_ps(hi);
    const __m512i absm = _mm512_set1_epi32(0x7fffffff);
    int64_t c = 0, nb = 0, i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 a = _mm512_castsi512_ps(_mm512_and_si512(_mm512_loadu_si512(v + i), absm));
        __mmask16 gh = _mm512_cmp_ps_mask(a, vhi, _CMP_GT_OQ);
        __mmask16 in = _mm512_cmp_ps_mask(a, vlo, _CMP_GT_OQ) & _mm512_cmp_ps_mask(a, vhi, _CMP_LE_OQ);
        c += __builtin_popcount(gh);
        if (in) {
            _mm512_storeu_ps(band + nb, _mm512_maskz_compress_ps(in, a));
            nb += __builtin_popcount(in);
        }
    }
    *above_hi = c;
    return band_c(v, i, n, lo, hi, band, nb, above_hi);
}

__attribute__((target("avx512f")))
static int64_t apply_512(float *v, uint8_t *keep, int64_t n, float t) {
    const __m512 vt = _mm512_set1_ps(t), one = _mm512_set1_ps(1.0f);
    const __m512i absm = _mm512_set1_epi32(0x7fffffff), ione = _mm512_set1_epi32(1);
    int64_t kept = 0, i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 x = _mm512_loadu_ps(v + i);
        __m512 a = _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(x), absm));
        __mmask16 k = _mm512_cmp_ps_mask(a, vt, _CMP_GE_OQ);
        _mm_storeu_si128((__m128i *)(keep + i), _mm512_cvtepi32_epi8(_mm512_maskz_mov_epi32(k, ione)));
        _mm512_storeu_ps(v + i, _mm512_mul_ps(x, _mm512_maskz_mov_ps(k, one)));
        kept += __builtin_popcount(k);
    }
    return kept + apply_c(v, keep, i, n, t);
}
static int allow_512 = 1;
#define HAVE_512 (allow_512 && __builtin_cpu_supports("avx512f"))
#else
static int allow_512 = 0;
#define HAVE_512 0
#endif

/* tests: 0 runs the portable loops even where AVX-512 is there */
void l0_allow_simd(int on) { allow_512 = on; }

/* #{|v| > hi} into *above_hi; lo < |v| <= hi packed into band (capacity n + 16), in index
   order; returns the band's size */
int64_t l0_band(const float *v, int64_t n, float lo, float hi, float *band, int64_t *above_hi) {
#if defined(__x86_64__) && defined(__GNUC__)
    if (HAVE_512) return band_512(v, n, lo, hi, band, above_hi);
#endif
    *above_hi = 0;
    return band_c(v, 0, n, lo, hi, band, 0, above_hi);
}

/* keep = |v| >= t; v *= keep; returns #kept */
int64_t l0_apply(float *v, uint8_t *keep, int64_t n, float t) {
#if defined(__x86_64__) && defined(__GNUC__)
    if (HAVE_512) return apply_512(v, keep, n, t);
#endif
    return apply_c(v, keep, 0, n, t);
}

/* which loops run: 512 (AVX-512) or 0 (portable) */
int l0_simd(void) { return HAVE_512 ? 512 : 0; }
"""

def _declare(lib: ctypes.CDLL) -> None:
    i64, f32, p = ctypes.c_int64, ctypes.c_float, ctypes.c_void_p
    lib.l0_band.argtypes = [p, i64, f32, f32, p, p]
    lib.l0_band.restype = i64
    lib.l0_apply.argtypes = [p, p, i64, f32]
    lib.l0_apply.restype = i64
    lib.l0_simd.restype = ctypes.c_int
    lib.l0_allow_simd.argtypes = [ctypes.c_int]


def library() -> ctypes.CDLL | None:
    """The loaded kernel, or None when it is switched off or cannot be built (torch ops then)."""
    return native.load("l0native", SOURCE, _declare)


def usable(v: Tensor) -> bool:
    """Whether ``v`` can go through the kernel: float32, contiguous, on the CPU, kernel built."""
    return (v.dtype == torch.float32 and v.device.type == "cpu" and v.is_contiguous()
            and library() is not None)


def band_buffer(v: Tensor) -> Tensor:
    """A buffer :func:`band` can pack ``v``'s band into (16 spare slots for the vector stores)."""
    return torch.empty(v.numel() + 16, dtype=v.dtype)


def band(v: Tensor, lo: float, hi: float, out: Tensor) -> tuple[int, Tensor]:
    """``(#{|v| > hi}, |v|[(|v| > lo) & (|v| <= hi)])``, the band a view into ``out``
    (from :func:`band_buffer`)."""
    if out.numel() < v.numel() + 16:
        raise ValueError("the band buffer needs v.numel() + 16 entries (band_buffer)")
    above = ctypes.c_int64()
    nb = library().l0_band(v.data_ptr(), v.numel(), lo, hi, out.data_ptr(), ctypes.byref(above))
    return int(above.value), out[:nb]


def apply(v: Tensor, t: float) -> tuple[Tensor, int]:
    """``keep = |v| >= t`` and ``v.mul_(keep)`` in one pass; returns ``(keep, #kept)``."""
    keep = torch.empty(v.numel(), dtype=torch.bool)
    kept = library().l0_apply(v.data_ptr(), keep.data_ptr(), v.numel(), t)
    return keep, int(kept)


__all__ = ["SOURCE", "apply", "band", "band_buffer", "library", "usable"]
