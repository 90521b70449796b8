"""Below one bit: SignScore's range-coded uplink and downlink decode to exactly the packed signs,
cost less when few signs change, are refused when damaged, and the summary's bits per kept
weight come from the real payloads."""

from __future__ import annotations

import math

import pytest
import torch

from fedticket.fl import wire
from fedticket.fl.methods import make_method

from .test_signscore import _cfg, _ticket


def _round(coding_up="packed", coding_down="packed", seed=0):
    cfg = _cfg(f"signscore.uplink_coding={coding_up}", f"signscore.downlink_coding={coding_down}",
               f"seed={seed}")
    ticket = _ticket()
    method = make_method(cfg, ticket)
    glob = method.initial_global()
    method.on_broadcast(1, glob)
    learner = method.learner(0)
    learner.load_global(glob)
    x, y = torch.randn(16, 12), torch.randint(0, 3, (16,))
    learner.train(x, y, server_round=1)
    return method, learner, learner.update(1), glob


def test_coded_uplink_decodes_to_the_packed_signs_and_is_smaller():
    m_p, _, packed, _ = _round("packed")
    m_e, _, coded, _ = _round("entropy")
    assert coded.stype == wire.CODED_BITS and m_e.uplink_kind == wire.CODED_BITS
    bits = m_p.decode_update(packed)
    assert torch.equal(m_e.decode_update(coded), bits)
    # the payload is the core coder's, against the broadcast (all +1) signs, with the seed of
    # the client's own draw (so the server can rebuild the dither model)
    from fedticket.core.entropy import encode_delta
    from fedticket.fl.methods.base import client_seed

    seed = client_seed(m_e.cfg, 1, 0, 7)
    ones = torch.ones(m_e.ticket.kept, dtype=torch.bool)
    assert bytes(coded.data) == encode_delta(bits, ones, dither_seed=seed)


def test_coded_downlink_is_exact_on_client_and_server():
    method, learner, up, glob = _round("entropy", "entropy")
    assert glob.stype == wire.CODED_BITS
    assert torch.equal(learner._global, torch.ones(method.ticket.kept, dtype=torch.bool))
    new = method.aggregate(1, [method.decode_update(up)], [16], glob)
    ref = make_method(_cfg(), _ticket())
    ref.initial_global()
    want = wire.decode_bits_array(ref.aggregate(1, [method.decode_update(up)], [16],
                                                ref.initial_global()), method.ticket.kept)
    assert torch.equal(method._signs(new), want)
    method.eval_model(new, 1)


def test_damaged_or_foreign_coded_updates_are_malformed_with_a_reason():
    method, _, coded, _ = _round("entropy")
    data = bytes(coded.data)
    bad = {
        "kind": wire.bits_array(torch.ones(method.ticket.kept, dtype=torch.bool)),
        "expected": wire.coded_bits_array(torch.ones(method.ticket.kept - 1, dtype=torch.bool),
                                          torch.ones(method.ticket.kept - 1, dtype=torch.bool)),
        "corrupt|words": wire.raw_array(data[:-1] + bytes([data[-1] ^ 0xFF]), wire.CODED_BITS),
        "too short": wire.raw_array(data[:11], wire.CODED_BITS),
    }
    for reason, array in bad.items():
        with pytest.raises(wire.MalformedPayload, match=reason):
            method.decode_update(array)
    fresh = make_method(_cfg("signscore.uplink_coding=entropy"), _ticket())
    with pytest.raises(wire.MalformedPayload, match="no global signs"):
        fresh.decode_update(coded)


@pytest.mark.slow
def test_coding_changes_bytes_not_results_and_summary_counts_bits(tiny, tmp_path):
    from fedticket.fl.server_app import run_in_process

    runs = {}
    for coding in ("packed", "entropy"):
        cfg = tiny("method=signscore", "eval.personal_every=0", "server.checkpoint=false",
                   f"signscore.uplink_coding={coding}", f"signscore.downlink_coding={coding}")
        runs[coding] = run_in_process(cfg, tmp_path / coding)
    p, e = runs["packed"], runs["entropy"]
    assert e["rejected_replies"] == 0 and e["uplink_kind"] == wire.CODED_BITS
    assert e["final_global_accuracy"] == p["final_global_accuracy"]   # lossless
    kept = p["kept_weights"]
    for s in (p, e):
        assert s["uplink_bits_per_kept_weight"] == pytest.approx(
            8 * s["uplink_bytes_per_client_round"] / kept)
        assert s["downlink_bits_per_kept_weight"] == pytest.approx(
            8 * s["downlink_bytes_per_client_round"] / kept)
    assert p["uplink_bits_per_kept_weight"] == pytest.approx(8 * (math.ceil(kept / 8) + 8) / kept)
    assert e["uplink_bits_per_kept_weight"] < 1 and e["downlink_bits_per_kept_weight"] < 1
