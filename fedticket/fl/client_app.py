"""The ClientApp: one virtual client per Flower SuperNode, partition id from ``node_config``.

Handlers (Message API): ``query`` answers the server's discovery (which partition is this
node?), ``train`` runs one local round and replies with one wire payload, ``evaluate`` measures
personalised accuracy on the client's held-out split. The one-time setup (config with the seed,
packed SynFlow mask) arrives with the first message and is kept in ``Context.state`` together
with the client's own score magnitudes, so later messages carry only the round's global payload.
"""

from __future__ import annotations

import json
import time
from functools import lru_cache

import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedticket.core import Mask, decode_bits
from fedticket.fl import wire
from fedticket.fl.config import config_from_json
from fedticket.fl.dataset import client_tensors
from fedticket.fl.learners import make_learner
from fedticket.fl.model import build_ticket, evaluate
from fedticket.fl.strategy import GLOBAL, METRICS, SETUP, UPDATE

STATE_SETUP = "fedticket.setup"
STATE_LOCAL = "fedticket.local"

app = ClientApp()


@lru_cache(maxsize=2)
def _ticket(config_json: str, layout_json: str, mask_blob: bytes):
    """Rebuild the frozen ticket from the seed and the packed mask (cached per worker process)."""
    cfg = config_from_json(config_json)
    layout = json.loads(layout_json)
    n = sum(int(torch.Size(shape).numel()) for _, shape in layout)
    flat = decode_bits(mask_blob, expected_n=n)
    mask, off = Mask(), 0
    for name, shape in layout:
        k = int(torch.Size(shape).numel())
        mask[name] = flat[off:off + k].reshape(shape)
        off += k
    return cfg, build_ticket(cfg, mask)


def _session(msg: Message, context: Context):
    """(cfg, ticket, partition id, data root, local state) for this node, storing a new setup."""
    if SETUP in msg.content.array_records:
        context.state[STATE_SETUP] = msg.content.array_records[SETUP]
    if STATE_SETUP not in context.state.array_records:
        raise RuntimeError("this client has no setup (config + mask); the server must send it "
                           "with the client's first message")
    setup = context.state.array_records[STATE_SETUP]
    cfg, ticket = _ticket(bytes(setup["config"].data).decode(),
                          bytes(setup["layout"].data).decode(), bytes(setup["mask"].data))
    if cfg.sim.torch_threads:
        torch.set_num_threads(cfg.sim.torch_threads)
    pid = int(context.node_config["partition-id"])
    # a real deployment may hold its data elsewhere: node_config "data-root" wins
    root = str(context.node_config.get("data-root", cfg.data.root))
    local = None
    if STATE_LOCAL in context.state.array_records:
        local = wire.decode_floats_array(context.state.array_records[STATE_LOCAL]["scores"],
                                         ticket.kept)
    return cfg, ticket, pid, root, local


def _round(msg: Message) -> int:
    return int(msg.content.config_records["config"]["round"])


@app.query()
def query(msg: Message, context: Context) -> Message:
    """Discovery: tell the server which data partition this node holds."""
    metrics = MetricRecord({"partition-id": int(context.node_config["partition-id"]),
                            "num-partitions": int(context.node_config["num-partitions"])})
    return Message(RecordDict({METRICS: metrics}), reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    """One local round: global payload in, local training, one wire payload out."""
    t0 = time.perf_counter()
    cfg, ticket, pid, root, local = _session(msg, context)
    server_round = _round(msg)
    learner = make_learner(cfg, ticket, pid, local)
    learner.load_global(wire.get_array(msg.content, GLOBAL))
    x, y, _, _ = client_tensors(cfg, root, pid)
    t_train = time.perf_counter()
    loss, steps = learner.train(x, y, server_round)
    t_train = time.perf_counter() - t_train
    update = learner.update(server_round)
    state = learner.local_state()
    if state is not None:
        context.state[STATE_LOCAL] = ArrayRecord({"scores": wire.floats_array(state)})
    metrics = MetricRecord({"num-examples": int(len(y)), "round": server_round,
                            "train-loss": float(loss), "train-steps": int(steps),
                            "train-seconds": t_train,  # local optimisation only
                            "client-seconds": time.perf_counter() - t0})  # + setup, data, codec
    return Message(RecordDict({UPDATE: wire.record(update), METRICS: metrics}), reply_to=msg)


@app.evaluate()
def evaluate_personal(msg: Message, context: Context) -> Message:
    """Personalised accuracy: global mask (+ optional local steps) on the held-out split."""
    cfg, ticket, pid, root, local = _session(msg, context)
    server_round = _round(msg)
    learner = make_learner(cfg, ticket, pid, local)
    learner.load_global(wire.get_array(msg.content, GLOBAL))
    x, y, xv, yv = client_tensors(cfg, root, pid)
    if cfg.eval.personalize_steps > 0:
        learner.train(x, y, server_round + 100_000, max_steps=cfg.eval.personalize_steps,
                      epochs=max(1, cfg.eval.personalize_steps))
    acc, loss = evaluate(learner.eval_model(), xv, yv, cfg.eval.batch_size)
    metrics = MetricRecord({"num-examples": int(len(yv)), "round": server_round,
                            "accuracy": float(acc), "loss": float(loss)})
    return Message(RecordDict({METRICS: metrics}), reply_to=msg)
