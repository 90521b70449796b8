"""The client side of every method, for fedticket's ClientApp and for any Flower ClientApp.

A client keeps the one-time setup (config with the seed + the mask) and its own local state
(score magnitudes of the 1-bit vote methods) in Flower's node ``Context.state``, rebuilds the
frozen ticket, and answers a train or evaluate message with :func:`train_reply` /
:func:`evaluate_reply`. :class:`TicketClient` does all of it for a model fedticket does not ship:

    client = TicketClient(model_fn=Net)              # the same factory the ServerApp was given

    @app.query()                                     # which partition this node holds
    def query(msg, context):
        return client.query(msg, context)

    @app.train()                                     # loader of client.partition(msg, context)
    def train(msg, context):
        return client.train(msg, context, train_loader)

    @app.evaluate()
    def evaluate(msg, context):
        return client.evaluate(msg, context, train_loader, val_loader)

Imports no server code: the protocol, the payloads and the methods' client halves only.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from torch import nn

from fedticket.core.mask import Mask
from fedticket.fl import attack, protocol, wire
from fedticket.fl.config import config_from_json
from fedticket.fl.methods import make_method, method_class
from fedticket.fl.model import evaluate, user_ticket

STATE_SETUP = "fedticket.setup"
STATE_LOCAL = "fedticket.local"
STATE_GLOBAL = "fedticket.global"   # the last global signs this node trained from + their round


def message_round(msg: Message) -> int:
    return int(msg.content.config_records[protocol.CONFIG][protocol.ROUND])


def setup_of(msg: Message, context: Context) -> tuple[str, bytes, bytes]:
    """The node's setup (config JSON, mask layout, mask bits), storing a newly sent one."""
    if protocol.SETUP in msg.content.array_records:
        context.state[STATE_SETUP] = msg.content.array_records[protocol.SETUP]
    if STATE_SETUP not in context.state.array_records:
        raise RuntimeError("this client has no setup (config + mask); the server must send it "
                           "with the client's first message")
    return protocol.read_setup(context.state.array_records[STATE_SETUP])


def context_local_state(context: Context, kept: int) -> torch.Tensor | None:
    """The local state this node kept in Context.state, if any."""
    if STATE_LOCAL not in context.state.array_records:
        return None
    return wire.decode_floats_array(context.state.array_records[STATE_LOCAL]["scores"], kept)


def context_held_global(context: Context, kept: int) -> tuple[int, torch.Tensor] | None:
    """(round, signs) of the last global this node trained from, if it kept one; a damaged or
    foreign entry counts as none (the server's payload then names a reference it cannot have)."""
    if STATE_GLOBAL not in context.state.array_records:
        return None
    rec = context.state.array_records[STATE_GLOBAL]
    try:
        r = int(np.frombuffer(bytes(rec["round"].data), dtype="<u4")[0])
        return r, wire.decode_bits_array(rec["signs"], kept)
    except (KeyError, IndexError, ValueError):
        return None


def keep_global(context: Context, server_round: int, signs: torch.Tensor) -> None:
    """Remember the global this node trains from: the server may code the next one against it."""
    context.state[STATE_GLOBAL] = ArrayRecord({
        "signs": wire.bits_array(signs),
        "round": wire.raw_array(np.asarray([server_round], dtype="<u4").tobytes(), "fedticket.u32")})


def train_reply(msg: Message, context: Context, cfg, ticket, partition_id: int, x, y,
                local: torch.Tensor | None, t0: float,
                on_state: Callable[[int, torch.Tensor], None] | None = None) -> Message:
    """One local round: the global payload in, local training, the update out."""
    server_round = message_round(msg)
    method = make_method(cfg, ticket)
    learner = method.learner(partition_id, local)
    global_array = wire.get_array(msg.content, protocol.GLOBAL)
    learner.held_global = context_held_global(context, ticket.kept)
    learner.load_global(global_array)
    held = learner.global_to_keep()
    if held is not None:
        keep_global(context, server_round, held)
    t_train = time.perf_counter()
    loss, steps = learner.train(x, attack.poison_labels(cfg, partition_id, y), server_round)
    t_train = time.perf_counter() - t_train
    update = attack.poison_update(cfg, method, partition_id, server_round,
                                  learner.update(server_round), global_array,
                                  reference=learner.coding_reference())
    state = learner.local_state()
    if state is not None:
        context.state[STATE_LOCAL] = ArrayRecord({"scores": wire.floats_array(state)})
        if on_state is not None:
            on_state(server_round, state)
    metrics = MetricRecord({protocol.NUM_EXAMPLES: int(len(y)), protocol.ROUND: server_round,
                            "train-loss": float(loss), "train-steps": int(steps),
                            "train-seconds": t_train,  # local optimisation only
                            "client-seconds": time.perf_counter() - t0})  # + setup, data, codec
    return Message(RecordDict({protocol.UPDATE: wire.record(update),
                               protocol.METRICS: metrics}), reply_to=msg)


def evaluate_reply(msg: Message, cfg, ticket, partition_id: int, local, x, y, xv, yv,
                   held: tuple[int, torch.Tensor] | None = None) -> Message:
    """Personalised accuracy: the global payload (+ optional local steps) on held-out data."""
    server_round = message_round(msg)
    learner = make_method(cfg, ticket).learner(partition_id, local)
    learner.held_global = held
    learner.load_global(wire.get_array(msg.content, protocol.GLOBAL))
    if cfg.eval.personalize_steps > 0:
        learner.train(x, y, server_round + 100_000, max_steps=cfg.eval.personalize_steps,
                      epochs=max(1, cfg.eval.personalize_steps))
    acc, loss = evaluate(learner.eval_model(), xv, yv, cfg.eval.batch_size)
    metrics = MetricRecord({protocol.NUM_EXAMPLES: int(len(yv)), protocol.ROUND: server_round,
                            protocol.ACCURACY: float(acc), "loss": float(loss)})
    return Message(RecordDict({protocol.METRICS: metrics}), reply_to=msg)


def as_tensors(data) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, y)`` tensors, or a data loader (any iterable of ``(x, y)`` batches) read once."""
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(
            isinstance(t, torch.Tensor) for t in data):
        return data[0], data[1]
    xs, ys = [], []
    for batch in data:
        xs.append(torch.as_tensor(batch[0]))
        ys.append(torch.as_tensor(batch[1]))
    if not xs:
        raise ValueError("the client's data loader yielded no batch")
    return torch.cat(xs), torch.cat(ys).long()


class TicketClient:
    """Client side of a fedticket strategy over a user's ``torch.nn.Module``.

    ``model_fn`` must be the factory the server's strategy was built with: the frozen weights
    are rebuilt from it under the run's seed, never sent. Training batches are drawn by
    fedticket's seeded shuffling (``train.batch_size``), so a rerun repeats every draw.
    """

    def __init__(self, model_fn: Callable[[], nn.Module]):
        self.model_fn = model_fn
        self._tickets: dict[tuple, tuple] = {}

    def session(self, msg: Message, context: Context):
        """(cfg, ticket, partition id, local state) of this node."""
        key = setup_of(msg, context)
        if key not in self._tickets:
            self._tickets.clear()   # one run at a time: keep one ticket
            cfg = config_from_json(key[0])
            ticket = user_ticket(self.model_fn, cfg, mask=Mask.decode(key[1], key[2]),
                                 dense=method_class(cfg.method).dense)
            self._tickets[key] = (cfg, ticket)
        cfg, ticket = self._tickets[key]
        try:
            pid = protocol.partition_of(msg, context)
        except KeyError:   # a node config without partition-id: one client
            pid = 0
        return cfg, ticket, pid, context_local_state(context, ticket.kept)

    @staticmethod
    def partition(msg: Message, context: Context) -> int:
        """The partition this node plays for ``msg``; load the node's data by it. In Flower's
        simulation the server assigns it (``server.partitions``), else the node config's."""
        return protocol.partition_of(msg, context)

    def query(self, msg: Message, context: Context) -> Message:
        """The discovery reply: this node's ``partition-id`` / ``num-partitions`` node config."""
        return query_reply(msg, context)

    def train(self, msg: Message, context: Context, train_data) -> Message:
        """The train reply: ``train_data`` is ``(x, y)`` or a data loader."""
        t0 = time.perf_counter()
        cfg, ticket, pid, local = self.session(msg, context)
        x, y = as_tensors(train_data)
        return train_reply(msg, context, cfg, ticket, pid, x, y, local, t0)

    def evaluate(self, msg: Message, context: Context, train_data, val_data) -> Message:
        """The evaluate reply (personalised accuracy on ``val_data``)."""
        cfg, ticket, pid, local = self.session(msg, context)
        x, y = as_tensors(train_data)
        xv, yv = as_tensors(val_data)
        return evaluate_reply(msg, cfg, ticket, pid, local, x, y, xv, yv,
                              context_held_global(context, ticket.kept))


def query_reply(msg: Message, context: Context) -> Message:
    """Discovery: tell the server which data partition this node holds."""
    metrics = MetricRecord({
        protocol.PARTITION: int(context.node_config[protocol.PARTITION]),
        protocol.NUM_PARTITIONS: int(context.node_config[protocol.NUM_PARTITIONS])})
    return Message(RecordDict({protocol.METRICS: metrics}), reply_to=msg)
