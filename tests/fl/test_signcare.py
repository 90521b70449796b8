"""signscore-care's defining properties: a client votes only on the weights whose summed score
gradient is largest and abstains elsewhere (a weight its data never touches gets no vote); the
ternary payload decodes exactly and costs well below 1 bit per kept weight; an abstention counts
0 at the server, so one client that needs a sign flipped is not outvoted by clients that do not
care; ``vote=soft`` sends the exact soft signs; secure aggregation is refused. Synthetic tickets."""

from __future__ import annotations

import pytest
import torch

from fedticket.errors import ConfigError
from fedticket.fl import wire
from fedticket.fl.config import load_fl_config
from fedticket.fl.methods import make_method
from fedticket.fl.methods.signcare import (
    TVOTES,
    SignCareMethod,
    care_top,
    decode_ternary,
    encode_ternary,
)
from fedticket.fl.methods.signscore import vote_scale
from fedticket.fl.testing import toy_ticket


def _ticket(seed=0, density=0.5):
    return toy_ticket(seed, density)


def _cfg(*over):
    return load_fl_config(None, ["method=signscore-care", "num_clients=10",
                                 "clients_per_round=10", "train.batch_size=64", *over])


def test_care_top_keeps_exactly_the_largest():
    care = torch.tensor([0.1, 5.0, 0.3, 4.0, 0.0, 2.0])
    assert care_top(care, 0.5).tolist() == [False, True, False, True, False, True]
    assert int(care_top(care, 1e-9).sum()) == 1       # at least one vote


def test_ternary_payload_round_trips_and_costs_below_a_bit():
    g = torch.Generator().manual_seed(0)
    n = 20_000
    voted = care_top(torch.rand(n, generator=g), 0.05)
    signs = torch.rand(n, generator=g) < 0.5
    reference = signs.clone()
    reference[:500] = ~reference[:500]               # a few voted signs disagree with it
    blob = encode_ternary(voted, signs, reference)
    votes = decode_ternary(blob, n, reference)
    assert torch.equal(votes[voted], signs[voted].double() * 2 - 1)
    assert torch.all(votes[~voted] == 0)
    assert len(blob) * 8 < 0.4 * n                   # ~H(0.05) + a little: far below 1 bit
    with pytest.raises(wire.MalformedPayload):
        decode_ternary(blob[:-3], n, reference)
    with pytest.raises(wire.MalformedPayload):
        decode_ternary(b"XX" + blob[2:], n, reference)


def test_a_client_abstains_on_weights_its_data_never_touches():
    ticket = _ticket()
    method = make_method(_cfg("signcare.keep=0.3"), ticket)
    assert isinstance(method, SignCareMethod)
    method.on_broadcast(1, method.initial_global())
    learner = method.learner(0)
    learner.load_global(method.initial_global())
    x, y = torch.randn(32, 12), torch.randint(0, 3, (32,))
    x[:, 6:] = 0                                   # features 6..11: zero gradient on their weights
    learner.train(x, y, server_round=1)
    up = learner.update(1)
    assert up.stype == TVOTES
    votes = method.decode_update(up)
    first = ticket.mask[next(iter(ticket.mask.keys()))]
    dead = torch.zeros_like(first)
    dead[:, 6:] = True
    dead_kept = dead[first.bool()].bool()          # kept weights of layer 1 that read zeros
    n1 = int(first.sum())
    assert torch.all(votes[:n1][dead_kept] == 0)
    assert int((votes != 0).sum()) == round(0.3 * ticket.kept)
    # the voted ones are the client's own signs after training
    s = learner.net.score_vector()
    assert torch.equal(votes[votes != 0] > 0, (s >= 0)[votes != 0])


def test_one_caring_client_flips_a_sign_the_others_abstain_on():
    ticket = _ticket()
    method = make_method(_cfg(), ticket)
    start = method.initial_global()
    method.on_broadcast(1, start)
    n = ticket.kept
    keep, flip = torch.ones(n), torch.zeros(n)
    flip[0] = -1                                   # client 0 alone needs weight 0 flipped
    keep[0] = 0                                    # the others abstain on it
    updates = [flip] + [keep.clone() for _ in range(9)]
    signs = method._signs(method.aggregate(1, updates, [10] * 10, start))
    assert not bool(signs[0]) and bool(signs[1:].all())
    # with the others voting for the current sign instead (signscore's case) it stays
    method2 = make_method(_cfg(), ticket)
    method2.on_broadcast(1, method2.initial_global())
    updates = [flip] + [torch.ones(n) for _ in range(9)]
    assert bool(method2._signs(method2.aggregate(1, updates, [10] * 10, start))[0])


def test_accumulate_sums_votes_over_rounds():
    ticket = _ticket()
    method = make_method(_cfg("signcare.server=accumulate", "signscore.server_lr=0.06"), ticket)
    g = method.initial_global()
    d = torch.zeros(ticket.kept)
    d[0] = -1.0
    for r in (1, 2):                               # 0.1 - 0.06 > 0: still +; - 0.06 more: flipped
        method.on_broadcast(r, g)
        g = method.aggregate(r, [d], [1], g)
        assert bool(method._signs(g)[0]) is (r == 1)


def test_soft_vote_is_the_exact_soft_sign():
    ticket = _ticket()
    cfg = _cfg("signcare.vote=soft", "signscore.temperature=2")
    method = make_method(cfg, ticket)
    assert method.uplink_kind == wire.F32
    learner = method.learner(0)
    learner.load_global(method.initial_global())
    learner.train(torch.randn(16, 12), torch.randint(0, 3, (16,)), server_round=1)
    s = learner.net.score_vector().double()
    got = method.decode_update(learner.update(1))
    assert torch.allclose(got, torch.tanh(s / (2 * vote_scale(s))), atol=1e-6)


def test_secure_aggregation_is_refused():
    cfg = _cfg("server.secure_aggregation=true")
    with pytest.raises(ConfigError, match="secure aggregation"):
        make_method(cfg, _ticket())


def test_bit_attacks_are_refused_before_the_run():
    for kind in ("sign_flip", "random"):
        with pytest.raises(ConfigError, match="ternary votes"):
            _cfg(f"attack.kind={kind}", "attack.fraction=0.3")
    _cfg("attack.kind=label_flip", "attack.fraction=0.3")   # the data attack needs no payload
