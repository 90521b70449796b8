"""Reply collection and validation, shared by the training and the evaluation phase.

Pure functions: they look at the messages and say what each one is (from which node, valid or
not and why); they change nothing. The strategy decides what to do with the verdicts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from flwr.app import Message, MetricRecord

from fedticket.fl import protocol, wire


class Rejected(ValueError):
    """A reply left out of the aggregate; the message is the logged reason."""


def sent_ids(msgs: Iterable[Message]) -> dict[str, int]:
    """message id -> destination node, for messages the Grid has pushed (it sets their ids)."""
    return {m.metadata.message_id: m.metadata.dst_node_id for m in msgs
            if m.metadata.message_id}


def origin(reply: Message, sent: dict[str, int]) -> int:
    """The node a reply is about. An error the SuperLink makes up for an unreachable node
    (``Node Unavailable``) does not come from that node, but it answers that node's message."""
    rid = reply.metadata.reply_to_message_id
    if rid and rid in sent:
        return sent[rid]
    return reply.metadata.src_node_id


def check_reply(msg: Message, expected: dict[int, int], server_round: int) -> MetricRecord:
    """The reply's metrics if its common fields are right; else Rejected with the reason."""
    node = msg.metadata.src_node_id
    if node not in expected:
        raise Rejected(f"reply from node {node}, which was not sampled this round")
    content = msg.content
    if protocol.METRICS not in content.metric_records:
        raise Rejected(f"missing MetricRecord {protocol.METRICS!r}")
    metrics = content.metric_records[protocol.METRICS]
    for key in (protocol.NUM_EXAMPLES, protocol.ROUND):
        if key not in metrics:
            raise Rejected(f"metrics lack {key!r}")
    n = metrics[protocol.NUM_EXAMPLES]
    if not isinstance(n, int) or n < 1:
        raise Rejected(f"num-examples must be a positive integer, got {n!r}")
    if metrics[protocol.ROUND] != server_round:
        raise Rejected(f"reply is for round {metrics[protocol.ROUND]}, expected {server_round}")
    return metrics


@dataclass
class Collected:
    """One phase's replies sorted out, in partition order: ``valid`` (node, reply, metrics,
    decoded payload or None), ``rejected`` (node, reply, reason), ``failed`` (node, error
    reason), ``silent`` (nodes that sent nothing) and ``acknowledged`` (nodes whose reply passed
    the common checks: they hold the setup, even if their payload was then rejected)."""

    valid: list[tuple[int, Message, MetricRecord, object]] = field(default_factory=list)
    rejected: list[tuple[int, Message, str]] = field(default_factory=list)
    failed: list[tuple[int, str]] = field(default_factory=list)
    silent: list[int] = field(default_factory=list)
    acknowledged: list[int] = field(default_factory=list)


def collect(replies: Iterable[Message], sent: list[Message], expected: dict[int, int],
            server_round: int, decode: Callable[[object], object] | None = None) -> Collected:
    """Sort a phase's replies, in partition order (float sums then do not depend on arrival
    order); ``expected`` maps node id -> partition id of the messages ``sent``. ``decode``
    (training) turns the reply's ``UPDATE`` payload into the update, or raises
    ``wire.MalformedPayload``, which rejects the reply with that reason."""
    ids = sent_ids(sent)
    out = Collected()
    pending = dict(expected)
    for msg in sorted(replies, key=lambda m: expected.get(origin(m, ids), 1 << 62)):
        node = origin(msg, ids)
        pending.pop(node, None)
        if msg.has_error():
            out.failed.append((node, msg.error.reason))
            continue
        try:
            metrics = check_reply(msg, expected, server_round)
            out.acknowledged.append(node)
            update = None if decode is None else decode(
                wire.get_array(msg.content, protocol.UPDATE, protocol.PAYLOAD))
        except (Rejected, wire.MalformedPayload) as e:
            out.rejected.append((node, msg, str(e)))
            continue
        out.valid.append((node, msg, metrics, update))
    out.silent = sorted(pending, key=pending.get)
    return out
