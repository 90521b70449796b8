"""SignScore's accuracy levers of issue 10 target 1, stop 20, each by its defining property:
the delta vote (``signscore.uplink_vote: delta``) is an unbiased, sparse ternary rounding of the
clients' score changes, decoded exactly from a payload below one bit per kept weight, and its
server score accumulates them; ``local_rescale: kaiming`` resets the scale of a client's stale
magnitudes, not their order. Synthetic tickets: no data needed."""

from __future__ import annotations

import math

import pytest
import torch

from fedticket.core import entropy
from fedticket.core.supermask import kaiming_score_bound
from fedticket.errors import ConfigError
from fedticket.fl import wire
from fedticket.fl.config import load_fl_config
from fedticket.fl.methods import make_method
from fedticket.fl.methods.signscore import layer_sizes, rescaled_to_kaiming
from fedticket.fl.methods.signscore_delta import (
    TERNARY,
    decode_ternary,
    delta_step,
    encode_ternary,
    ternary_round,
)
from fedticket.fl.testing import toy_ticket


def _ticket(seed=0, density=0.3):
    return toy_ticket(seed, density)


def _cfg(*over):
    return load_fl_config(None, ["method=signscore", "num_clients=4", "clients_per_round=3",
                                 "train.batch_size=8", *over])


def test_ternary_rounding_is_unbiased_for_the_clipped_change_and_zero_where_nothing_moved():
    d = torch.tensor([0.0, 0.01, -0.02, 0.05, -0.3, 0.0, 0.2, -0.07])
    segments = [5, 3]
    reps = 20000
    g = torch.Generator().manual_seed(0)
    acc = torch.zeros(d.numel(), dtype=torch.float64)
    for _ in range(reps):
        t, scales = ternary_round(d, segments, 0.0, torch.rand(d.numel(), generator=g,
                                                             dtype=torch.float64))
        assert set(t.tolist()) <= {-1, 0, 1}
        assert t[0] == 0 and t[5] == 0
        acc += t.double() * torch.repeat_interleave(scales, torch.tensor(segments))
    # clip=0: B = max |Δ| per layer, so nothing is clipped and E[B·t] = Δ
    assert torch.allclose(acc / reps, d.double(), atol=4 * 0.3 / math.sqrt(reps))


def test_ternary_clip_bounds_the_decoded_change_by_clip_times_the_layers_rms():
    d = torch.cat([torch.randn(200, generator=torch.Generator().manual_seed(1)) * 0.01,
                   torch.tensor([5.0])])
    t, scales = ternary_round(d, [201], 2.0, torch.zeros(201, dtype=torch.float64))
    rms = float(d.double().pow(2).mean().sqrt())
    assert scales.tolist() == pytest.approx([2.0 * rms])
    assert t[-1] == 1    # the outlier is clipped to +B, not dropped


def _payload(n=20000, moved=0.1, seed=3):
    g = torch.Generator().manual_seed(seed)
    d = torch.randn(n, generator=g) * (torch.rand(n, generator=g) < moved)
    ref = torch.rand(n, generator=g) < 0.5
    segments = [n // 3, n - n // 3]
    u = entropy.dither(seed, n)
    t, scales = ternary_round(d, segments, 2.5, u)
    return encode_ternary(t, scales, seed, ref), t, scales, ref, segments


def test_ternary_payload_decodes_exactly_and_costs_less_than_a_bit_when_few_move():
    arr, t, scales, ref, segments = _payload()
    got = decode_ternary(arr, segments, ref)
    want = t.double() * torch.repeat_interleave(scales.float().double(), torch.tensor(segments))
    assert torch.equal(got, want.float())
    assert arr.stype == TERNARY
    # 10 % moved: H(0.1) + 0.1 sign bits ≈ 0.57 bit per entry, headers included < 0.7
    assert 8 * len(arr.data) < 0.7 * t.numel()


def test_ternary_payload_damaged_truncated_or_foreign_is_refused():
    arr, _t, _s, ref, segments = _payload()
    data = bytes(arr.data)
    with pytest.raises(wire.MalformedPayload):
        decode_ternary(wire.raw_array(data[:-3], TERNARY), segments, ref)
    bad = bytearray(data)
    bad[-5] ^= 0xFF
    with pytest.raises(wire.MalformedPayload):
        decode_ternary(wire.raw_array(bytes(bad), TERNARY), segments, ref)
    with pytest.raises(wire.MalformedPayload):
        decode_ternary(wire.raw_array(data, wire.BITS), segments, ref)
    with pytest.raises(wire.MalformedPayload):
        decode_ternary(arr, [sum(segments)], ref)        # another layer layout
    with pytest.raises(wire.MalformedPayload):
        decode_ternary(wire.raw_array(data + b"\0", TERNARY), segments, ref)


def test_delta_server_score_accumulates_instead_of_forgetting():
    s, v = torch.full((4,), 0.1), torch.zeros(4)
    u = torch.tensor([0.05, -0.05, 0.0, -0.2])
    s1, v1 = delta_step(s, v, [u], [1.0], lr=1.0, momentum=0.0)
    s2, _ = delta_step(s1, v1, [u], [1.0], lr=1.0, momentum=0.0)
    assert torch.allclose(s2 - s, 2 * u)               # an EMA would stop at the vote
    s_half, _ = delta_step(s, v, [u, -u], [3.0, 1.0], lr=0.5, momentum=0.0)
    assert torch.allclose(s_half - s, 0.5 * 0.5 * u)   # example-weighted mean, times lr


def test_delta_vote_round_through_the_method_moves_the_score_by_the_decoded_changes():
    ticket = _ticket()
    cfg = _cfg("signscore.uplink_vote=delta", "signscore.delta_clip=0")
    method = make_method(cfg, ticket)
    g0 = method.initial_global()
    method.on_broadcast(1, g0)
    x, y = torch.randn(32, 12), torch.randint(0, 3, (32,))
    updates, moved = [], []
    for pid in range(3):
        learner = method.learner(pid)
        learner.load_global(method.downlink(pid, 1, g0, True))
        start = learner.net.score_vector().clone()
        learner.train(x, y, server_round=1)
        moved.append(learner.net.score_vector() - start)
        arr = learner.update(1)
        assert arr.stype == TERNARY
        updates.append(method.decode_update(arr))
    for u, d in zip(updates, moved, strict=True):
        nz = u != 0
        assert bool(nz.any())
        assert torch.equal(torch.sign(u[nz]), torch.sign(d[nz]))   # a move's direction
    before = method._score.clone()
    method.aggregate(1, updates, [32, 32, 32], g0)
    assert torch.allclose(method._score - before, torch.stack(updates).mean(0), atol=1e-6)
    bounds = torch.cat([torch.full((k,), kaiming_score_bound(tuple(ticket.mask[n].shape)))
                        for k, n in zip(layer_sizes(ticket.mask), ticket.mask.keys(), strict=True)])
    assert torch.allclose(before, 0.5 * bounds)


def test_delta_vote_refuses_what_needs_bits_or_magnitudes():
    for over in ("signscore.dither_decode=true", "signscore.downlink_levels=2",
                 "robust.kind=reputation", "attack.kind=sign_flip", "attack.fraction=0.3"):
        extra = ["attack.kind=sign_flip"] if over == "attack.fraction=0.3" else []
        with pytest.raises(ConfigError, match="uplink_vote=delta"):
            _cfg("signscore.uplink_vote=delta", over, *extra)
    with pytest.raises(ConfigError):
        _cfg("signscore.uplink_vote=ternary")
    with pytest.raises(ConfigError):
        _cfg("signscore.delta_clip=-1")
    with pytest.raises(ConfigError):
        _cfg("signscore.delta_lr=0")


def test_local_rescale_sets_each_layers_mean_magnitude_and_keeps_signs_and_order():
    ticket = _ticket()
    sizes = layer_sizes(ticket.mask)
    g = torch.Generator().manual_seed(0)
    s = torch.randn(sum(sizes), generator=g) * torch.tensor([5.0] * sizes[0] + [0.01] * sizes[1])
    r = rescaled_to_kaiming(s, ticket.mask)
    assert torch.equal(r >= 0, s >= 0)
    for blk_s, blk_r, n in zip(torch.split(s, sizes), torch.split(r, sizes), ticket.mask.keys(),
                               strict=True):
        b = kaiming_score_bound(tuple(ticket.mask[n].shape))
        assert float(blk_r.abs().mean()) == pytest.approx(0.5 * b, rel=1e-5)
        assert torch.equal(blk_s.abs().argsort(), blk_r.abs().argsort())


def test_local_rescale_reaches_the_client_and_is_off_by_default():
    ticket = _ticket()
    stale = torch.randn(ticket.kept) * 3.0
    for over, rescaled in (((), False), (("signscore.local_rescale=kaiming",), True)):
        method = make_method(_cfg(*over), ticket)
        learner = method.learner(0, local_state=stale)
        learner.load_global(method.initial_global())
        got = learner.net.score_vector()
        assert torch.allclose(got.abs(), stale.abs()) != rescaled
        with pytest.raises(ConfigError):
            _cfg("signscore.local_rescale=fresh")
