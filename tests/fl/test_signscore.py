"""SignScore's defining properties: 1-bit payloads, unbiased stochastic signs, the server step's
direction, variance-preserving weights and seeded determinism. Synthetic tickets: no data needed."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from fedticket.core import Mask
from fedticket.fl import wire
from fedticket.fl.config import load_fl_config
from fedticket.fl.methods import make_method
from fedticket.fl.methods.signscore import (
    SignScoreMethod,
    server_step,
    stochastic_sign_bits,
    variance_preserving,
)
from fedticket.fl.model import make_ticket


def _ticket(seed=0, density=0.3):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 20), nn.ReLU(), nn.Linear(20, 3))
    g = torch.Generator().manual_seed(seed + 1)
    mask = Mask({n: torch.rand(p.shape, generator=g) < density
                 for n, p in model.named_parameters() if p.ndim == 2})
    return make_ticket(model, mask, scale_by_density=True)


def _cfg(*over):
    return load_fl_config(None, ["method=signscore", "num_clients=4", "clients_per_round=3",
                                 "train.batch_size=8", *over])


def test_method_is_registered_and_uplink_is_one_packed_bit_per_kept_weight():
    ticket = _ticket()
    method = make_method(_cfg(), ticket)
    assert isinstance(method, SignScoreMethod)
    learner = method.learner(0)
    learner.load_global(method.initial_global())
    x, y = torch.randn(16, 12), torch.randint(0, 3, (16,))
    learner.train(x, y, server_round=1)
    up = learner.update(1)
    header = len(wire.bits_array(torch.zeros(0, dtype=torch.bool)).data)
    assert len(up.data) == math.ceil(ticket.kept / 8) + header
    assert method.decode_update(up).numel() == ticket.kept
    down = method.aggregate(1, [method.decode_update(up)], [16], method.initial_global())
    assert len(down.data) == math.ceil(ticket.kept / 8) + header


def test_stochastic_sign_is_unbiased_for_tanh_of_scaled_score():
    s = torch.linspace(-2, 2, 9)
    T = 0.7
    g = torch.Generator().manual_seed(0)
    n = 20000
    votes = torch.stack([stochastic_sign_bits(s, T, g).double() * 2 - 1 for _ in range(n)]).mean(0)
    expected = torch.tanh(s.double() / (T * s.abs().mean().double()))
    assert torch.allclose(votes, expected, atol=4 / math.sqrt(n))


def test_stochastic_sign_is_seeded():
    s = torch.randn(1000)
    a = stochastic_sign_bits(s, 1.0, torch.Generator().manual_seed(5))
    b = stochastic_sign_bits(s, 1.0, torch.Generator().manual_seed(5))
    c = stochastic_sign_bits(s, 1.0, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_server_step_moves_score_toward_the_vote_and_flips_only_under_sustained_votes():
    score, vel = torch.full((3,), 1.0), torch.zeros(3)
    against = torch.tensor([False, False, True])          # entries 0, 1 voted -1, entry 2 +1
    new, vel = server_step(score, vel, [against, against], [1, 1], lr=0.3, momentum=0.0)
    assert (new[:2] < score[:2]).all() and new[2] == pytest.approx(1.0)
    assert (new[:2] > 0).all()                             # one round against does not flip
    for _ in range(10):
        new, vel = server_step(new, vel, [against], [1], lr=0.3, momentum=0.0)
    assert (new[:2] < 0).all() and new[2] > 0              # sustained votes do
    # lr=1, momentum=0: the new score is the weighted mean vote (the plain soft vote)
    m, _ = server_step(torch.zeros(2), torch.zeros(2), [torch.tensor([True, False]),
                                                        torch.tensor([True, True])],
                       [3, 1], lr=1.0, momentum=0.0)
    assert torch.allclose(m, torch.tensor([1.0, -0.5]))


def test_momentum_accelerates_a_consistent_direction():
    bits = [torch.zeros(1, dtype=torch.bool)]
    plain = mom = torch.ones(1)
    v0 = v1 = torch.zeros(1)
    for _ in range(3):
        plain, v0 = server_step(plain, v0, bits, [1], lr=0.1, momentum=0.0)
        mom, v1 = server_step(mom, v1, bits, [1], lr=0.1, momentum=0.9)
    assert mom < plain


def test_variance_preserving_rescales_kept_fan_in_and_leaves_the_ticket_alone():
    ticket = _ticket(density=0.1)
    before = {n: p.clone() for n, p in ticket.model.named_parameters()}
    vp = variance_preserving(ticket)
    for n, p in ticket.model.named_parameters():
        assert torch.equal(p, before[n])
    for n, p in vp.model.named_parameters():
        if n in ticket.mask:
            assert ((p != 0) <= ticket.mask[n]).all()
            assert float((p.detach().reshape(p.shape[0], -1) ** 2).sum(1).mean()) == pytest.approx(2.0, rel=1e-4)


def test_a_round_is_deterministic_for_a_seed_and_server_and_client_agree_on_weights():
    def one_round(seed):
        cfg = _cfg(f"seed={seed}")
        ticket = _ticket()
        server, client = make_method(cfg, ticket), make_method(cfg, ticket)
        g0 = server.initial_global()
        ups = []
        for pid in range(3):
            learner = client.learner(pid)
            learner.load_global(g0)
            gen = torch.Generator().manual_seed(pid)
            learner.train(torch.randn(16, 12, generator=gen), torch.randint(0, 3, (16,), generator=gen), 1)
            ups.append(server.decode_update(learner.update(1)))
        w_s = dict(server.ticket.model.named_parameters())
        for n, p in client.ticket.model.named_parameters():
            assert torch.equal(p, w_s[n])
        return ups, server.aggregate(1, ups, [16, 16, 16], g0).data, server._score.clone()

    a, b = one_round(0), one_round(0)
    assert all(torch.equal(u, v) for u, v in zip(a[0], b[0])) and a[1] == b[1]
    assert torch.equal(a[2], b[2])
    c = one_round(1)                                       # another run seed: other draws
    assert not all(torch.equal(u, v) for u, v in zip(a[0], c[0]))


def test_a_server_without_a_score_takes_it_from_the_global_signs():
    cfg = _cfg()
    ticket = _ticket()
    m = make_method(cfg, ticket)
    bits = torch.rand(ticket.kept) < 0.5
    out = m.aggregate(3, [], [], wire.bits_array(bits))
    assert torch.equal(wire.decode_bits_array(out, ticket.kept), bits)
    assert torch.allclose(m._score.abs(), torch.full((ticket.kept,), cfg.signscore.init_margin))


def test_a_run_through_the_real_client_app_sends_one_packed_bit_per_kept_weight(tiny, tmp_path):
    from fedticket.fl.server_app import run_in_process

    cfg = tiny("method=signscore", "eval.personal_every=0", "server.checkpoint=false")
    summary = run_in_process(cfg, tmp_path / "run")
    header = len(wire.bits_array(torch.zeros(0, dtype=torch.bool)).data)
    assert summary["uplink_bytes_per_client_round"] == math.ceil(summary["kept_weights"] / 8) + header
    assert summary["rounds"] == 2 and summary["rejected_replies"] == 0
