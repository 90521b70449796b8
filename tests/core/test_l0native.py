"""fedticket.core.l0native: the ℓ0 projection's C kernel keeps the torch path's set, bit for bit."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fedticket.core import l0native
from fedticket.core.l0ball import FlatParameters, L0Ball

needs_kernel = pytest.mark.skipif(l0native.library() is None,
                                  reason="no C compiler here: the torch path runs alone")


def _walk(native: bool, n: int, keep: int, steps: int, ties: bool, seed: int = 0):
    """A random walk projected after every move, as PGD does; returns every step's keep and v."""
    g = torch.Generator().manual_seed(seed)
    w = nn.Parameter(torch.randn(n, generator=g) * 0.05)
    flat = FlatParameters({"w": w})
    ball = L0Ball(flat, keep, native=native)
    out = []
    for s in range(steps):
        # small moves (the warm band hits), a jump (it misses: widened band, then a full pass)
        flat.flat.add_(torch.randn(n, generator=g) * (0.2 if s == steps // 2 else 0.002))
        if ties:  # many equal magnitudes, both signs, and zeros: the tie rule decides
            flat.flat.copy_((flat.flat * 50).round() / 50)
        out.append((ball.project().clone(), flat.flat.clone()))
    return out


@pytest.fixture(params=["simd", "portable"])
def loops(request):
    """Both kernels: the AVX-512 loops (where the CPU has them) and the portable C loops."""
    lib = l0native.library()
    lib.l0_allow_simd(int(request.param == "simd"))
    yield request.param
    lib.l0_allow_simd(1)


@needs_kernel
@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "ties"])
@pytest.mark.parametrize("keep", [1, 37, 5000, 19_990])
def test_kernel_keeps_the_torch_paths_set_and_values(keep, ties, loops):
    n = 20_003  # not a multiple of the 16 vector lanes: the scalar tail runs too
    a = _walk(False, n, keep, 12, ties)
    b = _walk(True, n, keep, 12, ties)
    for (ka, va), (kb, vb) in zip(a, b):
        assert int(kb.sum()) == keep
        assert torch.equal(ka, kb)
        assert torch.equal(va, vb)
        assert torch.equal(torch.signbit(va), torch.signbit(vb))  # v *= keep: -x * 0 is -0


@needs_kernel
def test_band_and_apply_match_torch_ops(loops):
    g = torch.Generator().manual_seed(1)
    v = torch.randn(1_000_003, generator=g)
    v[::7] = 0.0
    v[5] = float("nan")
    a = v.abs()
    lo, hi = 0.3, 0.3 * 1.02
    above, band = l0native.band(v, lo, hi, l0native.band_buffer(v))
    assert above == int((a > hi).sum())
    assert torch.equal(band, a[(a > lo) & (a <= hi)])  # the same values in the same order
    t = float(torch.kthvalue(a[~a.isnan()], 500_000).values)
    w = v.clone()
    keep, kept = l0native.apply(w, t)
    assert torch.equal(keep, a >= t) and kept == int((a >= t).sum())
    torch.testing.assert_close(w, v * (a >= t), rtol=0, atol=0, equal_nan=True)


def test_switched_off_kernel_falls_back_to_torch(monkeypatch):
    monkeypatch.setenv("FEDTICKET_NATIVE", "0")
    v = torch.randn(100)
    assert not l0native.usable(v)
    w = nn.Parameter(v.clone())
    keep = L0Ball(FlatParameters({"w": w}), 10).project()
    assert int(keep.sum()) == 10 and torch.equal(keep, v.abs() >= v.abs().topk(10).values[-1])


def test_other_dtypes_take_the_torch_path():
    assert not l0native.usable(torch.randn(10, dtype=torch.float64))
    assert not l0native.usable(torch.randn(10, 2).t())


def test_a_failed_build_means_no_kernel_not_an_error(tmp_path, monkeypatch):
    from fedticket.core import native

    monkeypatch.setenv("FEDTICKET_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", "false")  # a "compiler" that always fails
    monkeypatch.setattr(native, "_cache_dirs", lambda: [tmp_path])
    assert native.load("broken_test_kernel", "int f(void) { return 1; }", lambda lib: None) is None
    assert not list(tmp_path.glob("*.so"))


@needs_kernel
def test_a_library_in_a_cache_others_can_write_is_not_loaded(tmp_path, monkeypatch):
    from fedticket.core import native

    src = "int answer(void) { return 42; }"
    good = tmp_path / "own"
    monkeypatch.setattr(native, "_cache_dirs", lambda: [good])
    lib = native.load("cache_owner_test_kernel", src, lambda lib: None)
    assert lib is not None and lib.answer() == 42
    # the same cache made world-writable (as a planted /tmp folder would be): not loaded
    native._loaded.pop("cache_owner_test_kernel")
    good.chmod(0o777)
    assert native.load("cache_owner_test_kernel", src, lambda lib: None) is None
    native._loaded.pop("cache_owner_test_kernel")
