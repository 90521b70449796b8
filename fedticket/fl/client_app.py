"""The ClientApp: one virtual client per Flower SuperNode, partition id from ``node_config``.

Handlers (Message API): ``query`` answers the server's discovery (which partition is this
node?), ``train`` runs one local round and replies with one wire payload, ``evaluate`` measures
personalised accuracy on the client's held-out split. The one-time setup (config with the seed,
packed SynFlow mask) arrives with the first message and is kept in ``Context.state`` together
with the client's own score magnitudes, so later messages carry only the round's global payload.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from functools import lru_cache
from pathlib import Path

import torch
from flwr.app import Context, Message
from flwr.client.mod import secaggplus_mod
from flwr.clientapp import ClientApp
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS

from fedticket.core import tensorfile
from fedticket.core.mask import Mask
from fedticket.fl import protocol, secagg_wire
from fedticket.fl.client import (  # noqa: F401  (STATE_*: where a node keeps what, re-exported)
    STATE_GLOBAL,
    STATE_LOCAL,
    STATE_SETUP,
    context_held_global,
    context_local_state,
    evaluate_reply,
    message_round,
    query_reply,
    setup_of,
    train_reply,
)
from fedticket.fl.config import config_from_json
from fedticket.fl.methods import make_method
from fedticket.fl.model import build_ticket
from fedticket.fl.task import get_task
from fedticket.results import atomic_write_bytes

STATE_FORMAT = "fedticket.client-state/1"

app = ClientApp()


@lru_cache(maxsize=2)
def _ticket(config_json: str, layout: bytes, mask_bits: bytes):
    """Rebuild the frozen ticket from the seed and the packed mask (cached per worker process)."""
    cfg = config_from_json(config_json)
    return cfg, build_ticket(cfg, Mask.decode(layout, mask_bits))


class LocalStateStore:
    """A client's own local state on its disk, one file per round it trained, per run.

    Flower keeps ``Context.state`` only for the life of a run, so a resumed run (a new Flower
    run) would restart the client's score magnitudes. With a state dir (node config
    ``state-dir``, else ``server.client_state_dir``) the client also writes its state after each
    round to ``DIR/<run-key>/p<partition>/round-<r>.safetensors`` and, lacking a Context.state,
    continues from the latest file *before* the current round: if the server died after this
    client trained round r but before round r was checkpointed, round r is redone from the state
    it started with. Files older than the newest one at or before the server's last checkpoint
    can never be needed again and are removed.
    """

    def __init__(self, root: str | Path, run_key: str, partition_id: int):
        self.dir = Path(root).expanduser() / run_key / f"p{partition_id}"

    def _rounds(self) -> list[int]:
        if not self.dir.is_dir():
            return []
        out = []
        for f in self.dir.glob("round-*.safetensors"):
            try:
                out.append(int(f.stem.split("-", 1)[1]))
            except ValueError:
                continue
        return sorted(out)

    def _file(self, r: int) -> Path:
        return self.dir / f"round-{r}.safetensors"

    def load_before(self, server_round: int) -> torch.Tensor | None:
        earlier = [r for r in self._rounds() if r < server_round]
        if not earlier:
            return None
        path = self._file(earlier[-1])
        try:
            return tensorfile.loads(path.read_bytes(), str(path))[0]["scores"]
        except (ValueError, KeyError, OSError) as e:
            raise RuntimeError(f"local state file {path} is unusable ({e}); remove it to "
                               "redo that round from the state before it") from None

    def save(self, server_round: int, state: torch.Tensor, completed_round: int) -> None:
        atomic_write_bytes(self._file(server_round),
                           tensorfile.dumps({"scores": state}, {"format": STATE_FORMAT}))
        rounds = self._rounds()
        keep_from = max([r for r in rounds if r <= completed_round], default=None)
        for r in rounds:
            if keep_from is not None and r < keep_from:
                self._file(r).unlink(missing_ok=True)


def _store(cfg, msg: Message, context: Context, pid: int) -> LocalStateStore | None:
    root = context.node_config.get("state-dir") or cfg.server.client_state_dir
    records = msg.content.config_records
    key = records[protocol.CONFIG].get(protocol.RUN_KEY) if protocol.CONFIG in records else None
    if not root or not key:
        return None
    return LocalStateStore(str(root), str(key), pid)


def _client_data(cfg, root: str, pid: int, context: Context):
    """This node's (x, y, x_val, y_val), from its on-disk cache when the node has one.

    Flower's deployment engine starts a fresh ClientApp process for every message, so the
    in-process cache never hits there; reading the whole dataset and re-partitioning it costs
    ~4 s per message on a 2-core machine. A SuperNode with a ``cache-dir`` (or ``state-dir``)
    in its node config keeps its own partition as one small safetensors file instead.
    """
    task = get_task(cfg)
    folder = context.node_config.get("cache-dir") or context.node_config.get("state-dir")
    if not folder or not task.cacheable:
        return task.client_data(cfg, root, pid)
    d = dataclasses.asdict(cfg.data)
    for k in ("root", "download"):
        d.pop(k)
    key = hashlib.sha256(json.dumps([d, cfg.seed, cfg.num_clients, pid],
                                    sort_keys=True).encode()).hexdigest()[:16]
    path = Path(str(folder)).expanduser() / "partitions" / f"{cfg.data.name}-p{pid}-{key}.safetensors"
    if path.is_file():
        try:
            t = tensorfile.loads(path.read_bytes(), str(path))[0]
            return t["x"], t["y"], t["xv"], t["yv"]
        except (ValueError, KeyError, OSError):  # damaged: rebuild it below
            path.unlink(missing_ok=True)
    x, y, xv, yv = task.client_data(cfg, root, pid)
    atomic_write_bytes(path, tensorfile.dumps({"x": x, "y": y, "xv": xv, "yv": yv},
                                              {"format": "fedticket.partition/1"}))
    return x, y, xv, yv


def _session(msg: Message, context: Context):
    """(cfg, ticket, partition id, data root, local state) for this node, storing a new setup."""
    cfg, ticket = _ticket(*setup_of(msg, context))
    if cfg.sim.torch_threads:
        torch.set_num_threads(cfg.sim.torch_threads)
    pid = protocol.partition_of(msg, context)
    # a real deployment may hold its data elsewhere: node_config "data-root" wins
    root = str(context.node_config.get("data-root", cfg.data.root))
    local = context_local_state(context, ticket.kept)
    if local is None and (store := _store(cfg, msg, context, pid)) is not None:
        local = store.load_before(message_round(msg))
        if local is not None and local.numel() != ticket.kept:
            raise RuntimeError(f"local state in {store.dir} has {local.numel()} values, the "
                               f"ticket keeps {ticket.kept}; remove that folder")
    return cfg, ticket, pid, root, local


@app.query()
def query(msg: Message, context: Context) -> Message:
    """Discovery: tell the server which data partition this node holds."""
    return query_reply(msg, context)


def secagg_mod(msg: Message, context: Context, call_next) -> Message:
    """Flower's ``secaggplus_mod`` for the messages of a SecAgg+ round, nothing for the others
    (a plain run's train messages carry no SecAgg+ stage)."""
    if msg.has_content() and RECORD_KEY_CONFIGS in msg.content.config_records:
        return secaggplus_mod(msg, context, call_next)
    return call_next(msg, context)


@app.train(mods=[secagg_mod])
def train(msg: Message, context: Context) -> Message:
    """One local round: global payload in, local training, one wire payload out (under
    SecAgg+: a legacy FitIns in, the update as the legacy FitRes the mod masks)."""
    t0 = time.perf_counter()
    secure = secagg_wire.is_fitins(msg)
    if secure:
        msg.content = secagg_wire.from_fitins(msg.content)
    cfg, ticket, pid, root, local = _session(msg, context)
    x, y, _, _ = _client_data(cfg, root, pid, context)
    store = _store(cfg, msg, context, pid)

    def keep(server_round: int, state: torch.Tensor) -> None:
        completed = int(msg.content.config_records[protocol.CONFIG].get(protocol.COMPLETED, 0))
        store.save(server_round, state, completed)

    reply = train_reply(msg, context, cfg, ticket, pid, x, y, local, t0,
                        on_state=keep if store is not None else None)
    if secure:
        reply.content = secagg_wire.fitres_content(cfg, make_method(cfg, ticket), reply)
    return reply


@app.evaluate()
def evaluate_personal(msg: Message, context: Context) -> Message:
    """Personalised accuracy: global mask (+ optional local steps) on the held-out split."""
    cfg, ticket, pid, root, local = _session(msg, context)
    x, y, xv, yv = _client_data(cfg, root, pid, context)
    return evaluate_reply(msg, cfg, ticket, pid, local, x, y, xv, yv,
                          context_held_global(context, ticket.kept))
