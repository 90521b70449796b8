"""The one Flower strategy of every method: sampling, setup, replies, the round loop.

:class:`TicketStrategy` is a Flower Message-API :class:`~flwr.serverapp.strategy.Strategy`
written the way Flower writes its own (``configure_*`` builds messages, ``aggregate_*`` turns
replies into the new global payload and metrics, ``start`` is the round loop and returns the
run's :class:`~fedticket.fl.history.History`). What differs between methods (payload kind,
aggregation, the server's evaluation model) is the :class:`~fedticket.fl.methods.Method` it is
given; membership is :class:`~fedticket.fl.membership.Membership`; reply checks are the pure
helpers of :mod:`~fedticket.fl.replies`; byte counting is :mod:`~fedticket.fl.history`.

===============  =========================  ===========================================
method           uplink payload             aggregation -> downlink payload
===============  =========================  ===========================================
hidenseek        packed signs (1 bit/kept)  weighted majority vote -> packed signs
binary-mask      packed {0,1} (1 bit/kept)  weighted majority vote -> packed mask
  (mean_score)   float32 scores             weighted mean -> float32 scores
fedpm            packed Bernoulli sample    Beta posterior (reset each round) -> float32 theta
fedavg           float32, every weight      weighted mean -> float32
fedavg-subnet    float32, kept weights      weighted mean -> float32
===============  =========================  ===========================================
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fedticket.fl import protocol, wire
from fedticket.fl.config import config_to_json
from fedticket.fl.history import History, RoundStats, count_downlink, count_reply
from fedticket.fl.membership import Membership
from fedticket.fl.methods import Method, make_method
from fedticket.fl.replies import collect

log = logging.getLogger("fedticket.fl")

TRAIN_SALT, EVAL_SALT = 11, 13   # seeds of the per-round client sampling


class TicketStrategy(Strategy):
    """One strategy for every method; ``method`` says how payloads decode and aggregate."""

    def __init__(self, cfg, method: Method, nodes: dict[int, int] | None = None,
                 run_key: str = "", history: History | None = None):
        self.cfg = cfg
        self.method = method
        self.members = Membership(cfg, nodes)
        self.history = History() if history is None else history  # a resume passes its rounds
        self.run_key = run_key                         # keys the clients' on-disk local state
        self._setup = protocol.make_setup(config_to_json(cfg), method.ticket.mask)
        self.history.setup_bytes_per_client = wire.payload_nbytes(
            RecordDict({protocol.SETUP: self._setup}))
        self._current = None                           # the global payload (Array)
        self._expected: dict[int, int] = {}            # node id -> partition id this phase
        self._sent: list[Message] = []                 # this phase's messages (ids set on push)

    @property
    def ticket(self):
        return self.method.ticket

    def initial_arrays(self) -> ArrayRecord:
        return wire.record(self.method.initial_global())

    # ---- sampling -------------------------------------------------------------------------------
    def sample(self, server_round: int, k: int, salt: int,
               available: Sequence[int] | None = None) -> list[int]:
        """Seeded choice of ``k`` partition ids among the available ones.

        With every client available this is ``choice(num_clients, k)``: the same seed samples
        the same clients whether or not the run was resumed; faults change only that round.
        """
        pool = np.arange(self.cfg.num_clients) if available is None else np.asarray(sorted(available))
        rng = np.random.default_rng([self.cfg.seed, salt, server_round])
        k = min(k, len(pool))
        if k == 0:
            return []
        return sorted(int(p) for p in rng.choice(pool, size=k, replace=False))

    def _messages(self, pids: list[int], arrays: ArrayRecord, server_round: int, mtype: str,
                  stats: RoundStats) -> list[Message]:
        msgs = []
        self._expected = {}
        has_setup = self.members.has_setup
        for pid in pids:
            node = self.members.nodes[pid]
            setup = None if node in has_setup else self._setup
            payload = arrays[protocol.PAYLOAD]
            own = self.method.downlink(pid, server_round, payload, mtype == MessageType.TRAIN)
            content = protocol.server_message(arrays if own is payload else wire.record(own),
                                              server_round, pid, self.run_key,
                                              self.history.completed_round, setup,
                                              assigned=bool(self.members.assign))
            count_downlink(stats, content,
                           None if setup is None else RecordDict({protocol.SETUP: setup}),
                           mtype == MessageType.TRAIN)
            self._expected[node] = pid
            msgs.append(Message(content=content, dst_node_id=node, message_type=mtype))
        self._sent = msgs
        return msgs

    # ---- Flower Strategy API --------------------------------------------------------------------
    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        stats = self.history.stats(server_round)
        stats.started = time.perf_counter()
        pids = self.sample(server_round, self.cfg.clients_per_round, TRAIN_SALT,
                           available=self.members.available())
        stats.sampled = pids
        self.method.on_broadcast(server_round, arrays[protocol.PAYLOAD])
        return self._messages(pids, arrays, server_round, MessageType.TRAIN, stats)

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        stats = self.history.stats(server_round)
        got = collect(list(replies), self._sent, self._expected, server_round,
                      decode=self.method.decode_update)
        stats.train_wall_seconds = time.perf_counter() - stats.started
        self.members.has_setup.update(got.acknowledged)
        for node, reason in got.failed:
            stats.missing.append(self.members.lost(node, server_round, f"failed: {reason}"))
        # bytes that arrived count, even if the reply is then rejected
        stats.uplink_bytes += sum(wire.payload_nbytes(msg.content) for _, msg, _ in got.rejected
                                  if msg.has_content())
        for node, _msg, why in got.rejected:
            stats.rejected += 1
            log.warning("round %d: rejected the reply of client %d: %s", server_round,
                        self.members.pid(node), why)
        updates, weights, pids = [], [], []
        for _node, msg, metrics, update in got.valid:
            pids.append(self.members.pid(_node))
            nbytes = wire.payload_nbytes(msg.content)
            stats.uplink_bytes += nbytes
            count_reply(stats, metrics, nbytes)
            updates.append(update)
            weights.append(int(metrics[protocol.NUM_EXAMPLES]))
        self.method.delivered(server_round, list(self._expected.values()), pids)
        for node in got.silent:
            stats.missing.append(self.members.lost(
                node, server_round, "sent no training reply within "
                f"server.train_timeout={self.cfg.server.train_timeout:g} s"))
        if len(updates) < self.cfg.server.min_train_replies:
            log.warning("round %d: %d valid update(s), fewer than server.min_train_replies=%d; "
                        "the global model stays as it was", server_round, len(updates),
                        self.cfg.server.min_train_replies)
            return None, None
        self.method.clients = pids   # whose update is which (robust.kind=reputation)
        self._current = self.method.aggregate(server_round, updates, weights, self._current)
        agg = MetricRecord({"accepted": stats.accepted, "rejected": stats.rejected})
        if stats.train_loss:
            agg["train-loss"] = float(np.average(stats.train_loss, weights=weights))
        return wire.record(self._current), agg

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        every = self.cfg.eval.personal_every
        if every <= 0 or (server_round % every and server_round != self.cfg.rounds):
            return []
        stats = self.history.stats(server_round)
        pids = self.sample(server_round, self.cfg.personal_clients, EVAL_SALT,
                           available=self.members.available())
        return self._messages(pids, arrays, server_round, MessageType.EVALUATE, stats)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]
                           ) -> MetricRecord | None:
        stats = self.history.stats(server_round)
        got = collect(list(replies), self._sent, self._expected, server_round)
        self.members.has_setup.update(got.acknowledged)
        for node, reason in got.failed:
            self.members.lost(node, server_round, f"failed its evaluation: {reason}")
        rejected = [(node, why) for node, _, why in got.rejected]
        accs, ns = [], []
        for node, _msg, metrics, _ in got.valid:
            acc = metrics.get(protocol.ACCURACY)
            if not isinstance(acc, float) or not 0.0 <= acc <= 1.0:
                rejected.append((node, f"accuracy must be a float in [0, 1], got {acc!r}"))
                continue
            accs.append(acc)
            ns.append(int(metrics[protocol.NUM_EXAMPLES]))
        for node, why in rejected:
            log.warning("round %d: rejected the evaluation of client %d: %s", server_round,
                        self.members.pid(node), why)
        for node in got.silent:
            self.members.lost(node, server_round, "sent no evaluation reply within "
                              f"server.evaluate_timeout={self.cfg.server.evaluate_timeout:g} s")
        if not accs:
            return None
        stats.personalized_accuracy = float(np.average(accs, weights=ns))
        stats.personalized_clients = len(accs)
        return MetricRecord({"personalized-accuracy": stats.personalized_accuracy})

    def summary(self) -> None:
        log.info("%s: %d clients, %d per round, %d kept weights, uplink %s",
                 type(self.method).__name__, self.cfg.num_clients, self.cfg.clients_per_round,
                 self.ticket.kept, self.method.uplink_kind)

    def start(self, grid: Grid, initial_arrays: ArrayRecord, num_rounds: int = 3,
              timeout: float | None = None, train_config: ConfigRecord | None = None,
              evaluate_config: ConfigRecord | None = None, evaluate_fn=None,
              first_round: int = 1, on_round_end=None) -> History:
        """The round loop (Flower's ``Strategy.start``, plus what a deployment needs).

        Differences from Flower's loop: nodes are discovered first (which partition each holds)
        and the table is refreshed before every round (joins, leaves, returning nodes);
        per-phase timeouts (``server.*_timeout``); the loop can
        start at ``first_round`` (resume), and ``on_round_end(round, arrays)`` runs after each
        completed round (the checkpoint). ``timeout``, if given, overrides both phase timeouts.
        """
        srv, h = self.cfg.server, self.history
        t_train = timeout or srv.train_timeout
        t_eval = timeout or srv.evaluate_timeout
        train_config = train_config or ConfigRecord()
        evaluate_config = evaluate_config or ConfigRecord()
        self._current = initial_arrays[protocol.PAYLOAD]   # ties of the vote fall back to it
        h.completed_round = first_round - 1
        h.arrays = arrays = initial_arrays
        self.summary()
        if not self.members.connected:
            self.members.connect(grid)
        if evaluate_fn is not None and first_round == 1:
            self._record(h.evaluate_metrics_serverapp, 0, evaluate_fn(0, arrays))
        for server_round in range(first_round, num_rounds + 1):
            self.members.before_round(grid, server_round, h.completed_round)
            if srv.secure_aggregation:
                # Flower's legacy server stack is loaded only when a run asks for SecAgg+
                from fedticket.fl.secagg import secure_train_round

                new_arrays, metrics = secure_train_round(self, grid, server_round, arrays, t_train)
            else:
                msgs = list(self.configure_train(server_round, arrays, train_config, grid))
                replies = grid.send_and_receive(msgs, timeout=t_train) if msgs else []
                new_arrays, metrics = self.aggregate_train(server_round, replies)
            if new_arrays is not None:
                h.arrays = arrays = new_arrays
            self._record(h.train_metrics_clientapp, server_round, metrics)
            msgs = list(self.configure_evaluate(server_round, arrays, evaluate_config, grid))
            if msgs:
                self._record(h.evaluate_metrics_clientapp, server_round, self.aggregate_evaluate(
                    server_round, grid.send_and_receive(msgs, timeout=t_eval)))
            if evaluate_fn is not None:
                self._record(h.evaluate_metrics_serverapp, server_round,
                             evaluate_fn(server_round, arrays))
            if on_round_end is not None:
                on_round_end(server_round, arrays)
            h.completed_round = server_round
        return h

    @staticmethod
    def _record(where: dict, server_round: int, metrics) -> None:
        if metrics is not None:
            where[server_round] = metrics


def make_strategy(cfg, ticket, nodes: dict[int, int] | None = None, run_key: str = "",
                  history: History | None = None) -> TicketStrategy:
    """The strategy of ``cfg.method`` over ``ticket`` (nodes: partition id -> node id, known)."""
    return TicketStrategy(cfg, make_method(cfg, ticket), nodes, run_key, history)
