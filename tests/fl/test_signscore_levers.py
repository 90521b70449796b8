"""SignScore's accuracy levers: the score-magnitude downlink (``signscore.downlink_levels``)
decodes exactly, costs what its planes cost, and makes every client start from the server's
score instead of its own stale magnitudes. Synthetic tickets: no data needed."""

from __future__ import annotations

import pytest
import torch

from fedticket.fl import wire
from fedticket.fl.methods import make_method
from fedticket.fl.methods.signscore import (
    LEVELS,
    decode_levels,
    dequantize_magnitude,
    encode_levels,
    local_bounds,
    quantize_magnitude,
)

from .test_signscore import _cfg, _ticket


@pytest.mark.parametrize("k", [1, 2, 3])
def test_quantized_magnitude_is_within_half_a_cell_and_never_zero(k):
    s = torch.linspace(-1.5, 1.5, 301)
    q = quantize_magnitude(s, k)
    assert int(q.min()) >= 0 and int(q.max()) == (1 << k) - 1
    back = dequantize_magnitude(q, k)
    assert (back > 0).all()
    assert (back - s.abs().clamp(0, 1).double()).abs().max() <= 0.5 / (1 << k) + 1e-12


@pytest.mark.parametrize("coding", ["packed", "entropy"])
def test_levels_payload_decodes_exactly_and_rejects_damage(coding):
    g = torch.Generator().manual_seed(0)
    n, k = 5000, 3
    ref = torch.ones(n, dtype=torch.bool)
    signs = torch.rand(n, generator=g) < 0.8
    levels = torch.randint(0, 1 << k, (n,), generator=g)
    arr = encode_levels(signs, levels, k, coding, ref)
    assert arr.stype == LEVELS
    s2, l2, k2 = decode_levels(arr, n, ref)
    assert torch.equal(s2, signs) and torch.equal(l2, levels) and k2 == k
    for bad in (bytes(arr.data)[:-3], bytes(arr.data) + b"\0", b"XX" + bytes(arr.data)[2:]):
        with pytest.raises(wire.MalformedPayload):
            decode_levels(wire.raw_array(bad, LEVELS), n, ref)
    with pytest.raises(wire.MalformedPayload, match="expected"):
        decode_levels(wire.bits_array(signs), n, ref)      # a plain sign payload is not one


def test_coded_levels_cost_less_when_magnitudes_are_skewed():
    n, k = 20000, 2
    ref = torch.ones(n, dtype=torch.bool)
    signs = torch.ones(n, dtype=torch.bool)
    skewed = torch.zeros(n, dtype=torch.long)
    skewed[:500] = 3
    uniform = torch.randint(0, 4, (n,), generator=torch.Generator().manual_seed(1))
    small = len(encode_levels(signs, skewed, k, "entropy", ref).data)
    big = len(encode_levels(signs, uniform, k, "entropy", ref).data)
    assert small < big <= len(encode_levels(signs, uniform, k, "packed", ref).data) + 64


def test_clients_start_from_the_server_score_not_their_own_magnitudes():
    cfg = _cfg("signscore.downlink_levels=3", "signscore.local_gain=2.0")
    ticket = _ticket()
    server = make_method(cfg, ticket)
    server.initial_global()
    g = torch.Generator().manual_seed(3)
    server._score = torch.rand(ticket.kept, generator=g) * 2 - 1
    glob = server._global(server._score >= 0)
    assert glob.stype == LEVELS
    assert torch.equal(server._signs(glob), server._score >= 0)
    client = make_method(cfg, ticket)
    a = client.learner(0)
    b = client.learner(1, local_state=torch.randn(ticket.kept, generator=g))  # stale, other magnitudes
    for learner in (a, b):
        learner.load_global(glob)
    sa, sb = a.net.score_vector(), b.net.score_vector()
    assert torch.equal(sa, sb)
    assert torch.equal(sa >= 0, server._score >= 0)
    want = dequantize_magnitude(quantize_magnitude(server._score, 3), 3) * local_bounds(ticket.mask) * 2.0
    assert torch.allclose(sa.abs().double(), want.double(), rtol=1e-6)
    # without levels, a client keeps its own magnitudes and takes only the signs
    plain = make_method(_cfg(), ticket)
    plain.initial_global()
    plain._score = server._score.clone()
    b_state = torch.randn(ticket.kept, generator=g)
    c = plain.learner(1, local_state=b_state)
    c.load_global(plain._global(plain._score >= 0))
    assert torch.allclose(c.net.score_vector().abs(), b_state.abs())
