"""ℓ0-ball projection over one flat parameter buffer: projected gradient descent, fast.

The training-time counterpart of :func:`fedticket.core.prune.l0_project` (one projection from
scores); the graph side's TEDDY uses it after every optimizer step.

TEDDY's code projects after every optimizer step onto ``{θ : ‖θ‖_0 ≤ k}`` over *all* parameters
together (every tensor of ``model.named_parameters()``: weight matrices, biases, GIN's ε, GAT's
attention vectors), by zeroing the ``ceil(p·n)`` smallest magnitudes. Nothing is frozen: a
pruned entry keeps receiving gradients (and Adam moments) and comes back when it grows past the
k-th largest magnitude. Done naively (concatenate every tensor, ``topk`` over 738k entries,
split again) that is the single largest cost of a TEDDY step on Cora.

Here the parameters are made *views into one flat buffer* (:class:`FlatParameters`), so the
projection reads and writes one contiguous tensor with no concatenation, and the k-th largest
magnitude is found by :func:`kth_largest` warm-started from the previous step's threshold: two
counting passes and a selection inside a narrow band around the old threshold, instead of a
full selection, because one Adam step moves the threshold very little. The result is exact
(the same kept set as a full ``kthvalue``; ties at the threshold go to the lower flat index).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from fedticket.core import l0native
from fedticket.core.mask import Mask


class FlatParameters:
    """Re-home ``params`` (name → Parameter) as views into one contiguous buffer ``flat``.

    The parameters stay the model's own ``nn.Parameter`` objects (optimizers, ``state_dict`` and
    ``load_state_dict`` work unchanged, since loading copies in place); only their storage moves.
    """

    def __init__(self, params: dict[str, nn.Parameter]):
        if not params:
            raise ValueError("no parameters to project")
        dtypes = {p.dtype for p in params.values()}
        devices = {p.device for p in params.values()}
        if len(dtypes) != 1 or len(devices) != 1:
            raise ValueError(f"all projected parameters must share one dtype and device, got "
                             f"{sorted(map(str, dtypes))} on {sorted(map(str, devices))}")
        self.names = list(params)
        self.shapes = {n: tuple(p.shape) for n, p in params.items()}
        total = sum(p.numel() for p in params.values())
        p0 = next(iter(params.values()))
        self.flat = torch.empty(total, dtype=p0.dtype, device=p0.device)
        self.slices: dict[str, slice] = {}
        offset = 0
        for n, p in params.items():
            k = p.numel()
            self.flat[offset:offset + k].copy_(p.detach().reshape(-1))
            p.data = self.flat[offset:offset + k].view(p.shape)
            self.slices[n] = slice(offset, offset + k)
            offset += k

    @property
    def numel(self) -> int:
        return int(self.flat.numel())

    def to_mask(self, keep: Tensor) -> Mask:
        """A core :class:`Mask` (one entry per parameter) from a flat keep vector."""
        keep = keep.detach().cpu()
        return Mask({n: keep[s].view(self.shapes[n]).clone() for n, s in self.slices.items()})


def kth_largest(a: Tensor, k: int, hint: float | None = None, width: float = 0.02) -> Tensor:
    """The ``k``-th largest value of the 1-D tensor ``a`` (``1 <= k <= a.numel()``), exactly.

    With ``hint`` (a value believed close to the answer), the answer is searched in the band
    ``(hint·(1-width), hint·(1+width)]`` first: if the counts above the band's edges bracket ``k``,
    only the band is searched; otherwise the band is widened once, and after a second miss a full
    ``kthvalue`` decides. Either way the returned value is the true k-th largest.
    """
    return _kth_and_count(a, k, hint, width)[0]


def _kth_and_count(a: Tensor, k: int, hint: float | None, width: float) -> tuple[Tensor, int]:
    """``(t, #{a >= t})`` for the k-th largest ``t``: when the band finds ``t``, the count comes
    from the band (``#{a > hi} + #{band >= t}``), sparing the projection a full counting pass."""

    def band_of(lo: float, hi: float) -> tuple[int, int, Tensor | None]:
        above_hi = int(torch.count_nonzero(a > hi))
        if above_hi >= k:
            return above_hi, above_hi, None
        in_lo = a > lo
        above_lo = int(torch.count_nonzero(in_lo))
        return above_hi, above_lo, (a[in_lo & (a <= hi)] if above_lo >= k else None)

    return _select(k, hint, width, band_of, lambda: a)


def _select(k: int, hint: float | None, width: float, band_of, full) -> tuple[Tensor, int]:
    """The warm-started search shared by the torch path and the native kernel.

    ``band_of(lo, hi)`` gives ``(#{a > hi}, #{a > lo}, a's values in (lo, hi])`` (the band may be
    None when the counts do not bracket ``k``); ``full()`` gives ``a`` itself for the cold case.
    """
    if hint is not None and hint > 0 and math.isfinite(hint):
        w = width
        for _ in range(2):
            lo, hi = hint * (1.0 - w), hint * (1.0 + w)
            above_hi, above_lo, band = band_of(lo, hi)
            if above_hi < k <= above_lo and band is not None:
                r = k - above_hi  # rank inside the band, from the top
                t = torch.kthvalue(band, band.numel() - r + 1).values
                return t, above_hi + int(torch.count_nonzero(band >= t))
            w *= 4.0
    a = full()
    t = torch.kthvalue(a, a.numel() - k + 1).values
    return t, int(torch.count_nonzero(a >= t))


class L0Ball:
    """Projection of a :class:`FlatParameters` onto the ℓ0 ball of radius ``keep`` (exact count).

    ``project()`` zeroes everything but the ``keep`` largest magnitudes in place and returns the
    flat keep vector; ties at the threshold go to the lower flat index, so the kept count is
    exact even when many entries are equal (e.g. zeros right after a projection).
    """

    def __init__(self, flat: FlatParameters, keep: int, native: bool = True):
        if not (1 <= keep <= flat.numel):
            raise ValueError(f"keep must be in 1..{flat.numel}, got {keep}")
        self.flat, self.keep = flat, int(keep)
        self._hint: float | None = None
        self._width = 0.02
        self.native = native
        self._band: Tensor | None = None  # the kernel's band buffer, allocated on first use

    @torch.no_grad()
    def project(self) -> Tensor:
        v = self.flat.flat
        if self.keep >= v.numel():
            return torch.ones_like(v, dtype=torch.bool)
        native = self.native and l0native.usable(v)
        if native:
            if self._band is None:
                self._band = l0native.band_buffer(v)
            t, kept = _select(self.keep, self._hint, self._width,
                              lambda lo, hi: self._native_band(v, lo, hi), v.abs)
        else:
            a = v.abs()
            t, kept = _kth_and_count(a, self.keep, self._hint, self._width)
        if self._hint is not None and self._hint > 0:
            # the next band: twice the relative move just seen (one step moves the threshold
            # little at low sparsity and more at high sparsity, where k is small)
            self._width = min(0.5, max(1e-3, 2.0 * abs(float(t) / self._hint - 1.0)))
        self._hint = float(t)
        extra = kept - self.keep
        if native:
            keep, _ = l0native.apply(v, float(t))
            if extra > 0:  # ties at t: drop the highest-index ones (entries below t are 0 now)
                tied = torch.nonzero(v.abs() == t).reshape(-1)[-extra:]
                keep[tied] = False
                v[tied] = v[tied] * 0.0  # as v.mul_(keep) would: the same signed zeros
            return keep
        keep = a >= t
        if extra > 0:  # ties at t: drop the highest-index ones
            tied = torch.nonzero(a == t).reshape(-1)
            keep[tied[tied.numel() - extra:]] = False
        v.mul_(keep)  # (masked_fill_ is several times slower on CPU)
        return keep

    def _native_band(self, v: Tensor, lo: float, hi: float) -> tuple[int, int, Tensor]:
        above_hi, band = l0native.band(v, lo, hi, self._band)
        return above_hi, above_hi + band.numel(), band


def ramp_keep(total: int, keep: int, step: int, ramp: int) -> int:
    """The ℓ0 budget of projection ``step`` (0-based) under a sparsity ramp of ``ramp`` steps.

    Gradual magnitude pruning's cubic schedule (Zhu & Gupta, 2017), as in annealed IHT: the
    density falls from 1 to ``keep / total`` as ``d_t = d + (1 - d)·(1 - (t+1)/ramp)³``, so
    the first projections remove little while the weights are still their random init, and
    most of the pruning happens early, when gradients are large. From step ``ramp - 1`` on the
    budget is ``keep``; ``ramp <= 1`` is no ramp (TEDDY: the final ``keep`` from the first step).
    """
    if ramp <= 1 or step >= ramp - 1:
        return int(keep)
    d = keep / total
    frac = (1.0 - (step + 1) / ramp) ** 3
    return max(int(keep), min(int(total), round(total * (d + (1.0 - d) * frac))))


def weights_to_keep(total: int, weight_sparsity: float) -> int:
    """Entries kept at a weight sparsity: ``total - ceil(total · s)``, TEDDY's count (at least 1)."""
    return max(1, total - math.ceil(total * float(weight_sparsity)))


__all__ = ["FlatParameters", "L0Ball", "kth_largest", "ramp_keep", "weights_to_keep"]
