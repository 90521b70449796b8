"""SignScore's per-node downlink (``signscore.downlink_reference: held``): each node's global
signs are coded against the last global it trained from when that is smaller, the payload names
its reference, a client without that reference refuses it, a node that gave no valid reply
falls back to the ticket, and the byte counts are the payloads'. Synthetic tickets: no data."""

from __future__ import annotations

import pytest
import torch
from flwr.app import Context, RecordDict

from fedticket.core.entropy import encode_delta
from fedticket.fl import wire
from fedticket.fl.client import context_held_global, keep_global
from fedticket.fl.methods import make_method
from fedticket.fl.methods.signscore import HeldDownlink

from .test_signscore import _cfg, _ticket

N = 4000


def _signs(seed, flip, base=None):
    g = torch.Generator().manual_seed(seed)
    base = torch.ones(N, dtype=torch.bool) if base is None else base
    return base ^ (torch.rand(N, generator=g) < flip)


def _ones():
    return torch.ones(N, dtype=torch.bool)


def test_a_node_that_trained_gets_the_global_coded_against_what_it_holds():
    g1 = _signs(1, 0.3)            # far from the ticket
    g2 = _signs(2, 0.01, g1)       # close to round 1's global
    down = HeldDownlink(_ones())
    down.broadcast(1, g1)
    first = down.payload(7, lambda: g1, train=True)
    assert wire.reference_of(first, N) == (None, wire.reference_crc(_ones()))   # never seen
    down.delivered(1, sent=[7, 8], acked=[7])
    down.broadcast(2, g2)
    own = down.payload(7, lambda: g2, train=True)
    assert wire.reference_of(own, N) == (1, wire.reference_crc(g1))
    assert torch.equal(wire.decode_referenced_bits_array(own, N, _ones(), (1, g1)), g2)
    # the body is the core coder's delta against round 1's signs: a few flips cost few bytes
    ticket_coded = down.payload(8, lambda: g2, train=True)   # node 8 never replied
    assert wire.reference_of(ticket_coded, N)[0] is None
    assert torch.equal(wire.decode_referenced_bits_array(ticket_coded, N, _ones(), None), g2)
    assert bytes(own.data).endswith(encode_delta(g2, g1))
    assert len(own.data) < len(ticket_coded.data) / 3


def test_the_ticket_is_used_when_it_is_the_smaller_reference():
    g1 = _signs(1, 0.3)
    g2 = _signs(3, 0.001)          # the server flipped nearly everything back
    down = HeldDownlink(_ones())
    down.broadcast(1, g1)
    down.delivered(1, sent=[0], acked=[0])
    down.broadcast(2, g2)
    p = down.payload(0, lambda: g2, train=True)
    assert wire.reference_of(p, N)[0] is None
    assert len(p.data) <= len(wire.referenced_bits_array(g2, g1, 1).data)


def test_a_node_sent_a_message_without_a_valid_reply_falls_back_to_the_ticket():
    g1, g2 = _signs(1, 0.3), _signs(2, 0.3)
    down = HeldDownlink(_ones())
    down.broadcast(1, g1)
    down.delivered(1, sent=[5], acked=[5])
    down.broadcast(2, g1 ^ _signs(4, 0.01, torch.zeros(N, dtype=torch.bool)))
    down.delivered(2, sent=[5], acked=[])     # it may or may not have kept round 2's
    down.broadcast(3, g2)
    assert wire.reference_of(down.payload(5, lambda: g2, train=True), N)[0] is None
    assert set(down.globals) == {3}           # nothing held any more: no copy kept


def test_stale_absent_or_foreign_client_state_is_refused_never_decoded_wrong():
    g1 = _signs(1, 0.3)
    g2 = _signs(2, 0.01, g1)
    p = wire.referenced_bits_array(g2, g1, 1)
    cases = {
        "holds no earlier global": None,
        "holds the one of round 4": (4, g1),
        "CRC-32 does not match": (1, _signs(9, 0.3)),
    }
    for reason, held in cases.items():
        with pytest.raises(wire.MalformedPayload, match=reason):
            wire.decode_referenced_bits_array(p, N, _ones(), held)


def test_damaged_or_foreign_payloads_are_refused_with_a_reason():
    g1 = _signs(1, 0.3)
    g2 = _signs(2, 0.02, g1)
    data = bytes(wire.referenced_bits_array(g2, g1, 1).data)
    bad = {
        "kind": wire.bits_array(g2),
        "carries": wire.referenced_bits_array(g2[:-1], g1[:-1], 1),
        "corrupt": wire.raw_array(data[:-1] + bytes([data[-1] ^ 0x5A]), wire.REF_BITS),
        "too short|truncated|whole number": wire.raw_array(data[:-6], wire.REF_BITS),
        "foreign header": wire.raw_array(b"XX" + data[2:], wire.REF_BITS),
        "truncated header": wire.raw_array(data[:12], wire.REF_BITS),
    }
    for reason, array in bad.items():
        with pytest.raises(wire.MalformedPayload, match=reason):
            wire.decode_referenced_bits_array(array, N, _ones(), (1, g1))


def test_client_keeps_the_global_it_trained_from_and_a_damaged_entry_counts_as_none():
    ctx = Context(run_id=1, node_id=3, node_config={}, state=RecordDict(), run_config={})
    assert context_held_global(ctx, N) is None
    g = _signs(1, 0.3)
    keep_global(ctx, 12, g)
    r, held = context_held_global(ctx, N)
    assert r == 12 and torch.equal(held, g)
    assert context_held_global(ctx, N + 1) is None    # another ticket: not this one's reference


def _train(method, current, pid, server_round, ctx, x, y):
    """A client's round as train_reply does it: held state in, global loaded, state kept."""
    learner = method.learner(pid)
    array = method.downlink(pid, server_round, current, train=True)
    learner.held_global = context_held_global(ctx, method.ticket.kept)
    learner.load_global(array)
    kept = learner.global_to_keep()
    if kept is not None:
        keep_global(ctx, server_round, kept)
    learner.train(x, y, server_round)
    return learner, array


def test_method_round_trip_over_rounds_is_exact_and_the_clients_train_from_the_same_signs():
    cfg = _cfg("signscore.uplink_coding=entropy", "signscore.downlink_coding=entropy",
               "signscore.server_lr=1.0")
    held_m, ticket_m = make_method(cfg, _ticket()), make_method(
        _cfg("signscore.uplink_coding=entropy", "signscore.downlink_coding=entropy",
             "signscore.downlink_reference=ticket", "signscore.server_lr=1.0"), _ticket())
    ctxs = {p: Context(run_id=1, node_id=p, node_config={}, state=RecordDict(), run_config={})
            for p in range(3)}
    x, y = torch.randn(24, 12), torch.randint(0, 3, (24,))
    cur = {m: m.initial_global() for m in (held_m, ticket_m)}
    refs = []
    for r in range(1, 5):
        pids = [0, 1] if r % 2 else [0, 2]
        for m in (held_m, ticket_m):
            m.on_broadcast(r, cur[m])
        ups = []
        for p in pids:
            learner, array = _train(held_m, cur[held_m], p, r, ctxs[p], x, y)
            assert array.stype == wire.REF_BITS
            refs.append(wire.reference_of(array, held_m.ticket.kept)[0])
            # what the client decoded is exactly the server's broadcast signs
            assert torch.equal(learner._global, held_m._sent)
            ups.append(held_m.decode_update(learner.update(r)))
        held_m.delivered(r, pids, pids)
        for m in (held_m, ticket_m):
            cur[m] = m.aggregate(r, ups, [24] * len(ups), cur[m])
        assert torch.equal(held_m._signs(cur[held_m]), ticket_m._signs(cur[ticket_m]))
    # the shared global (checkpoint, evaluation) stays the ticket-coded one; only messages differ
    assert cur[held_m].stype == wire.CODED_BITS
    assert refs[0] is None and any(r is not None for r in refs)  # held refs used once possible
    assert ticket_m.downlink(0, 5, cur[ticket_m], train=True) is cur[ticket_m]


def test_resumed_method_state_has_no_per_node_table():
    m = make_method(_cfg("signscore.downlink_coding=entropy"), _ticket())
    m.initial_global()
    assert set(m.state()) == {"score", "velocity"}


@pytest.mark.slow
def test_held_downlink_changes_bytes_not_results_and_summary_counts_them(tiny, tmp_path):
    from fedticket.fl.server_app import run_in_process

    runs = {}
    for ref in ("ticket", "held"):
        cfg = tiny("method=signscore", "rounds=3", "num_clients=3", "clients_per_round=2",
                   "eval.personal_every=3", "server.checkpoint=false",
                   "signscore.uplink_coding=entropy", "signscore.downlink_coding=entropy",
                   f"signscore.downlink_reference={ref}")
        runs[ref] = run_in_process(cfg, tmp_path / ref)
    t, h = runs["ticket"], runs["held"]
    assert h["rejected_replies"] == 0
    assert h["final_global_accuracy"] == t["final_global_accuracy"]       # lossless
    assert h["final_personalized_accuracy"] == t["final_personalized_accuracy"]
    kept = h["kept_weights"]
    assert h["downlink_bits_per_kept_weight"] == pytest.approx(
        8 * h["downlink_bytes_per_client_round"] / kept)
    # per node, never more than the ticket-coded payload + the 8-byte reference header
    assert h["downlink_bytes_per_client_round"] <= t["downlink_bytes_per_client_round"] + 8
