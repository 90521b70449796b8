"""``signscore.train_biases`` (issue 10, target 1): the parameters no mask covers travel beside
the delta vote — int8 per tensor down, an unbiased ternary change up, FedAvg on the server —
each part decoded exactly and refused when damaged. Synthetic tickets: no data needed."""

from __future__ import annotations

import math

import pytest
import torch

from fedticket.core import Mask
from fedticket.errors import ConfigError
from fedticket.fl import wire
from fedticket.fl.config import load_fl_config
from fedticket.fl.methods import make_method
from fedticket.fl.methods import signscore_biases as biases
from fedticket.fl.methods.signscore_delta import TERNARY
from fedticket.fl.model import Ticket, make_ticket
from fedticket.fl.testing import toy_ticket


def _cfg(*over):
    return load_fl_config(None, ["method=signscore", "num_clients=4", "clients_per_round=3",
                                 "train.batch_size=8", "signscore.uplink_vote=delta",
                                 "signscore.train_biases=true", *over])


def _data(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(32, 12, generator=g), torch.randint(0, 3, (32,), generator=g)


def test_free_parameters_are_exactly_what_the_mask_does_not_cover():
    ticket = toy_ticket()
    free = biases.free_parameters(ticket.model, ticket.mask)
    assert [n for n, _ in free] == ["1.bias", "3.bias"]
    assert biases.sizes(free) == [20, 3]
    v = torch.arange(23, dtype=torch.float32)
    biases.load_vector(free, v)
    assert torch.equal(biases.vector(free), v)
    with pytest.raises(ValueError, match="expected 23"):
        biases.load_vector(free, torch.zeros(22))


def test_container_round_trips_and_refuses_damage():
    inner = wire.raw_array(b"\x01\x02\x03", TERNARY)
    out = biases.attach(inner, b"part-bytes")
    assert biases.has_biases(out) and not biases.has_biases(inner)
    got, part = biases.detach(out)
    assert got.stype == TERNARY and bytes(got.data) == b"\x01\x02\x03" and part == b"part-bytes"
    blob = bytes(out.data)
    for bad in (blob[:3], b"XX" + blob[2:], blob[:-1], blob + b"\x00"):
        with pytest.raises(wire.MalformedPayload):
            biases.detach(wire.raw_array(bad, biases.WITH_BIASES))
    with pytest.raises(wire.MalformedPayload):
        biases.detach(inner)   # not a payload with biases at all


def test_int8_downlink_is_within_half_a_step_and_refuses_damage():
    g = torch.Generator().manual_seed(3)
    segments = [20, 3, 5]
    b = torch.cat([torch.randn(20, generator=g) * 0.1, torch.zeros(3),
                   torch.randn(5, generator=g) * 4.0])
    part = biases.quantize(b, segments)
    assert len(part) == 4 + 4 * 3 + 28
    got = biases.dequantize(part, segments)
    for blk, back in zip(torch.split(b, segments), torch.split(got, segments), strict=True):
        step = float(blk.abs().max()) / 127 if float(blk.abs().max()) > 0 else 1.0
        assert float((blk - back).abs().max()) <= step / 2 + 1e-7
    assert torch.equal(got[20:23], torch.zeros(3))     # an all-zero tensor stays exactly zero
    with pytest.raises(wire.MalformedPayload, match="bytes, expected"):
        biases.dequantize(part[:-1], segments)
    with pytest.raises(wire.MalformedPayload, match="tensors"):
        biases.dequantize(part, [20, 8])
    bad_scale = part[:4] + torch.tensor([float("nan"), 1.0, 1.0]).numpy().tobytes() + part[16:]
    with pytest.raises(wire.MalformedPayload, match="scale"):
        biases.dequantize(bad_scale, segments)


def test_uplink_change_is_unbiased_and_exact_in_size():
    change = torch.tensor([0.0, 0.01, -0.02, 0.05, -0.3, 0.0, 0.2, -0.07])
    segments = [5, 3]
    reps = 3000
    acc = torch.zeros(8, dtype=torch.float64)
    for seed in range(reps):
        got = biases.decode_change(biases.encode_change(change, segments, seed), segments)
        assert got.numel() == 8 and got[0] == 0 and got[5] == 0   # nothing moved, nothing sent
        acc += got.double()
    # no clipping (B = max |change| per tensor), so the mean of the decodes is the change
    assert torch.allclose(acc / reps, change.double(), atol=4 * 0.3 / math.sqrt(reps))
    with pytest.raises(wire.MalformedPayload):
        biases.decode_change(biases.encode_change(change, segments, 1)[:-3], segments)


def test_a_round_trains_the_biases_and_the_server_averages_their_changes():
    method = make_method(_cfg("signscore.delta_clip=0"), toy_ticket())
    ticket = method.ticket
    shared_bias = biases.vector(biases.free_parameters(ticket.model, ticket.mask)).clone()
    g0 = method.initial_global()
    assert biases.has_biases(g0)
    method.on_broadcast(1, g0)
    x, y = _data()
    updates, moved = [], []
    for pid in range(3):
        learner = method.learner(pid)
        learner.load_global(method.downlink(pid, 1, g0, True))
        start = biases.vector(learner._free).clone()
        learner.train(x, y, server_round=1)
        moved.append(biases.vector(learner._free) - start)
        arr = learner.update(1)
        assert biases.has_biases(arr)
        assert biases.detach(arr)[0].stype == TERNARY
        updates.append(method.decode_update(arr))
    # the clients' copies moved, the ticket every learner is built from did not
    assert all(float(m.abs().max()) > 0 for m in moved)
    assert torch.equal(biases.vector(biases.free_parameters(ticket.model, ticket.mask)),
                       shared_bias)
    k = ticket.kept
    assert all(u.numel() == k + 23 for u in updates)
    for u, m in zip(updates, moved, strict=True):
        nz = u[k:] != 0
        assert torch.equal(torch.sign(u[k:][nz]), torch.sign(m[nz]))   # a move's direction
    before_bias, before_score = method._bias.clone(), method._score.clone()
    g1 = method.aggregate(1, updates, [10, 20, 30], g0)
    w = torch.tensor([10.0, 20.0, 30.0]) / 60
    expect = sum(wi * u[k:] for wi, u in zip(w, updates, strict=True))
    assert torch.allclose(method._bias - before_bias, expect, atol=1e-6)
    assert torch.allclose(method._score - before_score,
                          sum(wi * u[:k] for wi, u in zip(w, updates, strict=True)), atol=1e-6)
    # what the clients get and what the server evaluates: the int8 copy of the server's biases
    sent = biases.dequantize(biases.detach(g1)[1], method._bias_sizes)
    assert torch.allclose(sent, method._bias, atol=float(method._bias.abs().max()) / 254 + 1e-7)
    model = method.eval_model(g1, 1)
    assert torch.equal(biases.vector(biases.free_parameters(model, ticket.mask)), sent)


def test_a_global_without_biases_is_refused_by_a_bias_training_client():
    ticket = toy_ticket()
    method = make_method(_cfg(), ticket)
    g0 = method.initial_global()
    inner, _ = biases.detach(g0)
    with pytest.raises(wire.MalformedPayload, match="no biases"):
        method.learner(0).load_global(inner)


def test_state_carries_the_server_biases():
    ticket = toy_ticket()
    method = make_method(_cfg(), ticket)
    method.initial_global()
    method._bias = torch.linspace(-1, 1, 23)
    state = method.state()
    assert torch.equal(state["bias"], method._bias)
    other = make_method(_cfg(), ticket)
    other.initial_global()
    other.load_state(state)
    assert torch.equal(other._bias, method._bias)


def test_train_biases_needs_the_delta_vote_and_a_model_with_free_parameters():
    with pytest.raises(ConfigError, match="uplink_vote=delta"):
        load_fl_config(None, ["method=signscore", "signscore.train_biases=true"])
    with pytest.raises(ConfigError):
        _cfg("signscore.bias_lr=0")
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3, bias=False))
    mask = Mask({"1.weight": torch.ones(3, 12, dtype=torch.bool)})
    ticket: Ticket = make_ticket(model, mask, scale_by_density=True)
    with pytest.raises(ConfigError, match="no parameters outside the mask"):
        make_method(_cfg(), ticket)
