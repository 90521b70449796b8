"""``server.secure_aggregation=true``: one training round through Flower's own SecAgg+.

Flower's :class:`~flwr.server.workflow.SecAggPlusWorkflow` runs the four SecAgg+ exchanges of a
round (setup / share keys / collect masked vectors / unmask) over the Grid and hands the
unmasked *sum* to a legacy :class:`flwr.server.strategy.Strategy`; it needs a
:class:`~flwr.server.compat.LegacyContext`. :func:`secure_train_round` replaces only the
training phase of :meth:`TicketStrategy.start <fedticket.fl.strategy.TicketStrategy.start>`:
sampling, the train instructions, membership, evaluation, checkpoints and byte counting stay
fedticket's. :class:`SumAdapter` is the legacy Strategy: ``configure_fit`` returns the clients
fedticket sampled, ``aggregate_fit`` turns the sum into pseudo-votes with the same per-entry
weighted count (:func:`~fedticket.fl.secagg_wire.pseudo_votes`) and calls the method's own
``aggregate`` on them. The server never sees one client's vector.

Bytes: every message of the four stages is counted as its serialized (protobuf) RecordDict,
per node and direction (:class:`CountingGrid`); a round's ``uplink_bytes`` is what its clients
sent in all four stages.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.common import bytes_to_ndarray, parameters_to_ndarrays
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key, Stage
from flwr.common.serde import recorddict_from_proto, recorddict_to_proto
from flwr.server.client_manager import SimpleClientManager
from flwr.server.compat.grid_client_proxy import GridClientProxy
from flwr.server.compat.legacy_context import LegacyContext
from flwr.server.server_config import ServerConfig
from flwr.server.strategy import Strategy
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
from flwr.server.workflow.constant import Key as WorkflowKey

from fedticket.fl import protocol, secagg_wire, wire
from fedticket.fl.history import count_reply

log = logging.getLogger("fedticket.fl")


def message_nbytes(content: RecordDict) -> int:
    """Serialized size of a message's content: what goes on the wire, every record included."""
    return int(recorddict_to_proto(content).ByteSize())


def check_masked_reply(content: RecordDict, n: int) -> str | None:
    """Why a masked-vector reply cannot be summed (None: it can). Flower's workflow would add
    a vector of the wrong length or kind into the sum and fail the whole round."""
    try:
        masked = content.config_records[RECORD_KEY_CONFIGS][Key.MASKED_PARAMETERS]
        arrays = [bytes_to_ndarray(b) for b in masked]
        count = content.metric_records["fitres.num_examples"]["num_examples"]
    except (KeyError, TypeError, ValueError) as e:
        return f"not a SecAgg+ masked vector ({type(e).__name__}: {e})"
    if [a.shape for a in arrays] != [(1,), (n,)]:
        return f"masked vector of shapes {[a.shape for a in arrays]}, expected [(1,), ({n},)]"
    if any(a.dtype.kind not in "iu" for a in arrays):
        return "masked vector is not integer"
    if not isinstance(count, int) or count < 1:
        return f"num_examples must be a positive integer, got {count!r}"
    return None


class CountingGrid:
    """A Grid that counts every message's serialized bytes, per SecAgg+ stage, node, direction,
    and drops a masked-vector reply that cannot be summed: SecAgg+ then treats that client as
    dropped after sharing its keys and removes its masks (the round goes on)."""

    def __init__(self, grid, uplink_values: int):
        self._grid = grid
        self.n = uplink_values
        self.rejected: dict[int, str] = {}
        self.up: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
        self.down: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
        self.errors: dict[int, str] = {}   # node -> its first error reply (stage: reason)

    def __getattr__(self, name):
        return getattr(self._grid, name)

    def send_and_receive(self, messages, *, timeout=None):
        stage, sent = "?", []
        for m in messages:
            stage = str(m.content.config_records[RECORD_KEY_CONFIGS][Key.STAGE])
            proto = recorddict_to_proto(m.content)
            self.down[stage][m.metadata.dst_node_id] += int(proto.ByteSize())
            # each node gets its own copy, as off the wire: SecAggPlusWorkflow gives every node
            # of a stage the same RecordDict and secaggplus_mod pops its stage key, which an
            # in-process grid would otherwise let the first node take from all the others
            sent.append(Message(recorddict_from_proto(proto), dst_node_id=m.metadata.dst_node_id,
                                message_type=m.metadata.message_type,
                                group_id=m.metadata.group_id))
        replies = list(self._grid.send_and_receive(sent, timeout=timeout))
        kept = []
        for r in replies:
            node = r.metadata.src_node_id
            if r.has_content():
                self.up[stage][node] += message_nbytes(r.content)
                why = (check_masked_reply(r.content, self.n)
                       if stage == Stage.COLLECT_MASKED_VECTORS else None)
                if why is not None:
                    self.rejected[node] = why
                    continue
            elif r.has_error():
                self.errors.setdefault(node, f"{stage}: {r.error.reason}")
            kept.append(r)
        return kept

    def uplink(self, node: int) -> int:
        return sum(per.get(node, 0) for per in self.up.values())


def make_workflow(cfg, timeout: float) -> SecAggPlusWorkflow:
    s = cfg.secagg
    shares = int(s.num_shares) if s.num_shares > 1 else float(s.num_shares)
    threshold = (int(s.reconstruction_threshold) if s.reconstruction_threshold > 1
                 else float(s.reconstruction_threshold))
    return SecAggPlusWorkflow(shares, threshold, timeout=timeout,
                              **secagg_wire.workflow_params(cfg))


class SumAdapter(Strategy):
    """The legacy Strategy SecAggPlusWorkflow drives for one round of a TicketStrategy."""

    def __init__(self, strategy, server_round: int, instructions: list):
        self.ts, self.server_round = strategy, server_round
        self.instructions = instructions     # [(ClientProxy, FitIns)], fedticket's sample
        self.result: tuple | None = None     # (new payload Array, results) once aggregated

    def configure_fit(self, server_round, parameters, client_manager):
        return self.instructions

    def aggregate_fit(self, server_round, results, failures):
        if not results:
            return None, {}
        ts, cfg = self.ts, self.ts.cfg
        weights = [int(fitres.num_examples) for _, fitres in results]
        (summed,) = parameters_to_ndarrays(results[0][1].parameters)  # the same sum in each
        if secagg_wire.mode(cfg) == "exact":
            tally = secagg_wire.exact_tally(summed, sum(weights))
            vecs, ws = secagg_wire.pseudo_votes(tally, weights)
            updates = [torch.from_numpy(np.ascontiguousarray(v)) for v in vecs]
        else:  # Flower's weighted mean already: the mean of one update is itself
            updates, ws = [torch.from_numpy(np.asarray(summed, dtype=np.float32))], [1]
        ts.method.clients = []   # who voted what is exactly what the server must not know
        current = ts.method.aggregate(server_round, updates, ws, ts._current)
        self.result = (current, results)
        return None, {}

    # the rest of the round (evaluation) stays fedticket's; SecAgg+ asks for none of these
    def initialize_parameters(self, client_manager):
        return None

    def configure_evaluate(self, server_round, parameters, client_manager):
        return []

    def aggregate_evaluate(self, server_round, results, failures):
        return None, {}

    def evaluate(self, server_round, parameters):
        return None


def secure_train_round(ts, grid, server_round: int, arrays, timeout: float):
    """One training round of ``ts`` (a TicketStrategy) through SecAgg+: ``(arrays, metrics)``
    as ``aggregate_train`` returns them (``None, None``: the global model stays)."""
    stats = ts.history.stats(server_round)
    msgs = list(ts.configure_train(server_round, arrays, ConfigRecord(), grid))
    if not msgs:
        return None, None
    run_id = int(getattr(getattr(grid, "run", None), "run_id", 0) or 0)
    counting = CountingGrid(grid, ts.method.uplink_values)
    instructions = [(GridClientProxy(m.metadata.dst_node_id, counting, run_id),
                     secagg_wire.to_fitins(m.content)) for m in msgs]
    adapter = SumAdapter(ts, server_round, instructions)
    context = LegacyContext(Context(run_id=run_id, node_id=0, node_config={}, state=RecordDict(),
                                    run_config={}),
                            ServerConfig(num_rounds=ts.cfg.rounds), adapter, SimpleClientManager())
    context.state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord(
        {WorkflowKey.CURRENT_ROUND: server_round})
    # SecAgg+ reads the round's parameters from here (our configure_fit has them already)
    context.state.array_records[MAIN_PARAMS_RECORD] = ArrayRecord(
        {"0": arrays[protocol.PAYLOAD]})
    make_workflow(ts.cfg, timeout)(counting, context)
    stats.train_wall_seconds = time.perf_counter() - stats.started
    # SecAgg+'s own protocol messages travel downlink too (keys, forwarded shares, unmask lists)
    stats.downlink_bytes += sum(sum(per.values()) for per in counting.down.values()) - sum(
        wire.payload_nbytes(m.content) for m in msgs)
    replied = ({proxy.node_id for proxy, _ in adapter.result[1]}
               if adapter.result is not None else set())
    ts.members.has_setup.update(replied)
    ts.method.delivered(server_round, list(ts._expected.values()),
                        [ts._expected[n] for n in replied if n in ts._expected])
    for node, why in counting.rejected.items():
        stats.rejected += 1
        log.warning("round %d: rejected the masked vector of client %d: %s", server_round,
                    ts.members.pid(node), why)
    for node in ts._expected:
        if node not in replied and node not in counting.rejected:
            why = counting.errors.get(node, "sent no masked vector (left SecAgg+, or the round "
                                            "was halted)")
            stats.missing.append(ts.members.lost(node, server_round, f"failed: {why}"))
    stats.uplink_bytes += sum(counting.uplink(n) for n in ts._expected)
    stats.secagg_bytes = {
        way: {stage: [sum(per.values()), len(per)] for stage, per in counts.items()}
        for way, counts in (("up", counting.up), ("down", counting.down))}
    if adapter.result is None:
        log.warning("round %d: secure aggregation halted (fewer than the reconstruction "
                    "threshold of clients stayed); the global model stays as it was", server_round)
        return None, None
    current, results = adapter.result
    for proxy, fitres in results:
        count_reply(stats, fitres.metrics, counting.uplink(proxy.node_id))
    if len(results) < ts.cfg.server.min_train_replies:
        log.warning("round %d: %d secure update(s), fewer than server.min_train_replies=%d; "
                    "the global model stays as it was", server_round, len(results),
                    ts.cfg.server.min_train_replies)
        return None, None
    ts._current = current
    agg = MetricRecord({"accepted": stats.accepted, "rejected": stats.rejected})
    if stats.train_loss:
        agg["train-loss"] = float(np.average(
            stats.train_loss, weights=[r.metrics[protocol.NUM_EXAMPLES] for _, r in results]))
    return wire.record(current), agg
