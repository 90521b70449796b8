"""The real ClientApp handlers and strategies, driven in-process through the in-memory Grid (no
Ray): bytes, robustness, pruned positions, determinism. The same code runs under Flower's engine
in tests/e2e."""

from __future__ import annotations

import logging
import math

import pytest
import torch
from flwr.app import Array, ConfigRecord, Message, MetricRecord, RecordDict

from fedticket.core.codec import HEADER_BYTES
from fedticket.core.mask import Mask
from fedticket.fl import client_app, wire
from fedticket.fl.memgrid import InMemoryGrid
from fedticket.fl.model import build_ticket, build_weights
from fedticket.fl.protocol import METRICS, UPDATE
from fedticket.fl.server_app import run_in_process
from fedticket.fl.strategy import make_strategy


class CorruptingGrid(InMemoryGrid):
    """The in-memory Grid with a hook that may replace a node's training reply
    (``corrupt(pid, reply, msg)``) before the server sees it; keeps the training replies."""

    corrupt = None

    def deliver(self, message):
        reply = super().deliver(message)
        if reply is None or message.metadata.message_type != "train":
            return reply
        if self.corrupt is not None:
            pid = self.contexts[message.metadata.dst_node_id].node_config["partition-id"]
            reply = self.corrupt(pid, reply, message)
        self.train_replies.append(reply)
        return reply


class Harness:
    """The strategy's own loop over the real ClientApps, one round per call."""

    def __init__(self, cfg):
        self.cfg = cfg
        mask = Mask.ones_like(build_weights(cfg)) if cfg.method == "fedavg" else None
        self.ticket = build_ticket(cfg, mask)
        self.grid = CorruptingGrid.for_partitions(client_app.app, cfg.num_clients)
        self.strategy = make_strategy(cfg, self.ticket)
        self.arrays = self.strategy.initial_arrays()
        self.contexts = self.grid.contexts

    @property
    def nodes(self):
        return self.strategy.members.nodes

    def round(self, r, corrupt=None):
        """Run round ``r``; returns the training replies the clients sent."""
        self.grid.corrupt, self.grid.train_replies = corrupt, []
        self.arrays = self.strategy.start(self.grid, self.arrays, num_rounds=r,
                                          first_round=r).arrays
        return self.grid.train_replies

    def stats(self, r):
        return self.strategy.history.rounds[r]


SUPERMASK = ["hidenseek", "binary-mask", "fedpm"]


@pytest.mark.parametrize("method", SUPERMASK)
def test_uplink_is_ceil_kept_over_8_plus_header(tiny, method):
    h = Harness(tiny(f"method={method}"))
    replies = h.round(1)
    kept = h.ticket.kept
    expected = math.ceil(kept / 8) + HEADER_BYTES
    assert expected == math.ceil(kept / 8) + 8
    sizes = [wire.payload_nbytes(r.content) for r in replies]
    assert sizes == [expected] * tiny().clients_per_round
    st = h.stats(1)
    assert st.uplink_per_reply == sizes and st.uplink_bytes == sum(sizes) and st.rejected == 0
    # the vote methods send the same packed size back down (plus the one-time setup)
    if method != "fedpm":
        h.round(2)
        st2 = h.stats(2)
        assert sum(st2.downlink_per_message) - st2.setup_bytes == \
            expected * len(st2.downlink_per_message)


def test_float_baselines_send_float32(tiny):
    dense = Harness(tiny("method=fedavg"))
    sub = Harness(tiny("method=fedavg-subnet"))
    n_dense = sum(v.numel() for v in dense.ticket.model.state_dict().values())
    biases = sum(p.numel() for n, p in sub.ticket.model.named_parameters() if p.ndim < 2)
    assert [wire.payload_nbytes(r.content) for r in dense.round(1)][0] == 4 * n_dense + 8
    assert [wire.payload_nbytes(r.content) for r in sub.round(1)][0] == \
        4 * (sub.ticket.kept + biases) + 8


def test_malformed_replies_are_rejected_and_round_goes_on(tiny, caplog):
    cfg = tiny("method=hidenseek", "num_clients=6", "clients_per_round=6")
    h = Harness(cfg)
    kept = h.ticket.kept
    good_bits = {}

    def corrupt(pid, reply, msg):
        payload = reply.content.array_records[UPDATE]["payload"]
        if pid == 0:  # wrong bit length: one bit short
            reply.content.array_records[UPDATE]["payload"] = wire.bits_array(
                torch.ones(kept - 1, dtype=torch.bool))
        elif pid == 1:  # wrong dtype: float scores where bits are expected
            reply.content.array_records[UPDATE]["payload"] = wire.floats_array(torch.zeros(kept))
        elif pid == 2:  # raw bytes declared as float32 array
            reply.content.array_records[UPDATE]["payload"] = Array(
                dtype="float32", shape=(len(payload.data),), stype=wire.BITS, data=payload.data)
        elif pid == 3:  # missing fields
            del reply.content.metric_records[METRICS]
        elif pid == 4:  # missing payload record
            return Message(RecordDict({METRICS: MetricRecord({"num-examples": 5, "round": 1})}),
                           reply_to=msg)
        else:
            good_bits[pid] = wire.decode_bits_array(payload, kept)
        return reply

    with caplog.at_level(logging.WARNING, logger="fedticket.fl"):
        h.round(1, corrupt)
    st = h.stats(1)
    assert (st.accepted, st.rejected) == (1, 5)
    text = caplog.text
    for reason in ("expected %d" % kept, "kind", "dtype", "missing MetricRecord",
                   "missing ArrayRecord"):
        assert reason in text, reason
    # the single valid vote decides every entry (no ties with one voter)
    (only,) = good_bits.values()
    assert torch.equal(wire.decode_bits_array(h.arrays["payload"], kept), only)


def test_nan_and_wrong_round_rejected_for_float_uplink(tiny, caplog):
    h = Harness(tiny("method=fedavg", "clients_per_round=3"))
    n = h.strategy.method.uplink_values

    def corrupt(pid, reply, msg):
        if pid == h.stats(1).sampled[0]:
            v = torch.zeros(n)
            v[3] = float("nan")
            reply.content.array_records[UPDATE]["payload"] = wire.floats_array(v)
        elif pid == h.stats(1).sampled[1]:
            reply.content.metric_records[METRICS]["round"] = 7
        return reply

    with caplog.at_level(logging.WARNING, logger="fedticket.fl"):
        h.round(1, corrupt)
    assert (h.stats(1).accepted, h.stats(1).rejected) == (1, 2)
    assert "NaN/inf" in caplog.text and "for round 7" in caplog.text
    assert torch.isfinite(wire.decode_floats_array(h.arrays["payload"], n)).all()


@pytest.mark.parametrize("method", ["hidenseek", "binary-mask", "fedpm", "fedavg-subnet"])
def test_pruned_positions_never_become_nonzero(tiny, method):
    h = Harness(tiny(f"method={method}", "train.max_steps=20"))
    for r in (1, 2):
        h.round(r)
        model = h.strategy.method.eval_model(h.arrays["payload"], r)
        params = dict(model.named_parameters())
        for name, m in h.ticket.mask.items():
            assert m.sum() < m.numel()  # something is pruned
            assert torch.count_nonzero(params[name].detach()[~m]) == 0, (method, name)
    # and clients' own models: personalised evaluation path
    msgs = list(h.strategy.configure_evaluate(2, h.arrays, ConfigRecord(), h.grid))
    assert msgs
    for reply in h.grid.send_and_receive(msgs):
        acc = reply.content.metric_records[METRICS]["accuracy"]
        assert 0.0 <= acc <= 1.0


def test_client_state_survives_rounds_in_context(tiny):
    h = Harness(tiny("method=hidenseek", "clients_per_round=4"))
    h.round(1)
    ctx = h.contexts[h.nodes[0]]
    assert client_app.STATE_SETUP in ctx.state.array_records
    assert client_app.STATE_LOCAL in ctx.state.array_records
    # the setup (config + packed mask) is sent once: round 2 messages carry only the signs
    h.round(2)
    kept = h.ticket.kept
    assert set(h.stats(2).downlink_per_message) == {math.ceil(kept / 8) + 8}
    assert h.stats(2).setup_bytes == 0 and h.stats(1).setup_bytes > 0


def test_same_seed_same_numbers(tiny, tmp_path):
    def accs(name, *extra):
        run_in_process(tiny("method=hidenseek", f"output_dir={tmp_path / name}", *extra),
                       tmp_path / name)
        return (tmp_path / name / "rounds.csv").read_text().splitlines()

    def col(lines, name):
        i = lines[0].split(",").index(name)
        return [row.split(",")[i] for row in lines[1:]]

    a, b, c = accs("a"), accs("b"), accs("c", "seed=1")
    assert col(a, "global_accuracy") == col(b, "global_accuracy")
    assert col(a, "global_accuracy") != col(c, "global_accuracy")
