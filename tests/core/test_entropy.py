"""The delta range coder: exact round trips, fewer bits than packing for sparse deltas, and
every damaged payload refused with a reason."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedticket.core.codec import entropy_bits_per_entry, packed_size
from fedticket.core.entropy import EXTRA_BYTES, decode_delta, encode_delta

HDR = 8 + EXTRA_BYTES


def _pair(n, p, seed=0):
    rng = np.random.default_rng(seed)
    ref = torch.from_numpy(rng.random(n) < 0.5)
    return ref ^ torch.from_numpy(rng.random(n) < p), ref


@pytest.mark.parametrize("n,p", [(1, 0.5), (7, 0.3), (1000, 0.01), (26620, 0.1), (26620, 0.5),
                                 (5000, 0.97)])
def test_round_trip_is_exact(n, p):
    bits, ref = _pair(n, p, seed=n)
    assert torch.equal(decode_delta(encode_delta(bits, ref), ref, expected_n=n), bits)


def test_sparse_delta_costs_about_its_entropy():
    n, p = 50_000, 0.05
    bits, ref = _pair(n, p)
    size = len(encode_delta(bits, ref))
    flips = float((bits ^ ref).float().mean())
    bound = n * entropy_bits_per_entry(flips) / 8
    assert size < packed_size(n) / 3
    assert bound <= size - HDR + 4 <= bound * 1.02 + 8


@pytest.mark.parametrize("kind", ["empty", "none", "all"])
def test_degenerate_inputs_carry_no_body(kind):
    n = 0 if kind == "empty" else 1234
    ref = torch.rand(n) < 0.5
    bits = ref.clone() if kind != "all" else ~ref
    blob = encode_delta(bits, ref)
    assert len(blob) == HDR
    assert torch.equal(decode_delta(blob, ref), bits)


def test_adversarial_patterns_round_trip():
    n = 4096
    ref = torch.zeros(n, dtype=torch.bool)
    for bits in (torch.arange(n) % 2 == 0, torch.arange(n) < 1, torch.arange(n) >= n - 1,
                 torch.arange(n) < n // 2):
        assert torch.equal(decode_delta(encode_delta(bits, ref), ref), bits)


def test_damaged_payloads_are_refused_with_a_reason():
    bits, ref = _pair(3000, 0.1)
    blob = encode_delta(bits, ref)
    flipped = bytearray(blob)
    flipped[HDR + 3] ^= 0x10
    cases = {
        "expected 2999": (blob, ref[:2999], 2999),
        "the reference": (blob, ref[:2999], None),
        "foreign header": (b"FT" + blob[2:], ref, None),
        "too short": (blob[:10], ref, None),
        "corrupt": (bytes(flipped), ref, None),
        "4-byte words": (blob[:-1], ref, None),
    }
    for reason, (payload, r, n) in cases.items():
        with pytest.raises(ValueError, match=reason):
            decode_delta(payload, r, expected_n=n)
    with pytest.raises(ValueError, match="corrupt"):
        decode_delta(blob + b"\0\0\0\0", ref)           # trailing words
    # a wrong reference decodes, but to other bits: the CRC-32 refuses it only if the delta
    # differs; the delta is relative, so the result is bits ^ (ref ^ other)
    other = ~ref
    assert torch.equal(decode_delta(blob, other), bits ^ ref ^ other)


def test_non_bool_input_is_refused():
    with pytest.raises(ValueError, match="bool"):
        encode_delta(torch.ones(4), torch.ones(4, dtype=torch.bool))


def test_dithered_stochastic_bits_round_trip_and_cost_less_than_the_plain_model():
    from fedticket.core.entropy import dither

    n, seed = 40_000, 1234
    g = torch.Generator().manual_seed(7)
    ref = torch.rand(n, generator=g) < 0.5
    # flip probabilities as a trained stochastic sign has them: mostly small, some near 1/2
    q = torch.rand(n, generator=g, dtype=torch.float64) ** 3 * 0.6
    p_one = torch.where(ref, 1 - q, q)
    bits = dither(seed, n) < p_one
    plain, dithered = encode_delta(bits, ref), encode_delta(bits, ref, dither_seed=seed)
    assert torch.equal(decode_delta(dithered, ref), bits)
    assert len(dithered) < 0.8 * len(plain)
    # any bits decode exactly with any seed (the model is only a model)
    other = torch.rand(n, generator=g) < 0.3
    assert torch.equal(decode_delta(encode_delta(other, ref, dither_seed=99), ref), other)
    damaged = bytearray(dithered)
    damaged[HDR + 2] ^= 1                          # the seed: another model, another decode
    with pytest.raises(ValueError, match="corrupt"):
        decode_delta(bytes(damaged), ref)
    with pytest.raises(ValueError, match="too short"):
        decode_delta(dithered[:HDR + 5], ref)


def test_context_model_round_trips_and_costs_the_conditional_entropy():
    # two classes with very different flip rates: one p for all pays H(mean), classes pay less
    n = 40_000
    rng = np.random.default_rng(3)
    ctx = (rng.random(n) < 0.3).astype(np.int64)
    ref = torch.from_numpy(rng.random(n) < 0.5)
    flip = np.where(ctx == 1, rng.random(n) < 0.4, rng.random(n) < 0.01)
    bits = ref ^ torch.from_numpy(flip)
    coded = encode_delta(bits, ref, context=ctx)
    assert torch.equal(decode_delta(coded, ref, expected_n=n, context=ctx), bits)
    plain = encode_delta(bits, ref)
    cond = sum((ctx == c).sum() * entropy_bits_per_entry(float(flip[ctx == c].mean()))
               for c in (0, 1)) / 8
    assert len(coded) < 0.75 * len(plain)
    assert cond <= len(coded) - HDR <= cond * 1.02 + 16


def test_context_payload_needs_the_receivers_classes_and_refuses_other_ones():
    n = 5000
    rng = np.random.default_rng(4)
    ctx = rng.integers(0, 3, n)
    bits, ref = _pair(n, 0.1, seed=5)
    coded = encode_delta(bits, ref, context=ctx)
    with pytest.raises(ValueError, match="no context classes"):
        decode_delta(coded, ref)
    with pytest.raises(ValueError, match="context classes"):
        decode_delta(coded, ref, context=ctx + 5)       # more classes than the payload has
    with pytest.raises(ValueError, match="corrupt"):
        decode_delta(coded, ref, context=(ctx + 1) % 3)  # other classes: never a wrong decode
    with pytest.raises(ValueError, match="integer class ids"):
        encode_delta(bits, ref, context=np.zeros(n - 1, dtype=np.int64))
