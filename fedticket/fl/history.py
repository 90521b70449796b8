"""What a run moved and cost, round by round: the strategy fills it, the ServerApp writes it out.

:class:`History` is Flower's :class:`~flwr.serverapp.strategy.Result` (final arrays, aggregated
metrics per round) plus fedticket's per-round :class:`RoundStats` (bytes from the real messages,
accepted / rejected / missing replies, timings). ``TicketStrategy.start`` returns it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from flwr.app import RecordDict
from flwr.serverapp.strategy import Result

from fedticket.fl import wire


@dataclass
class RoundStats:
    """What one round moved and cost."""

    sampled: list[int] = field(default_factory=list)
    uplink_bytes: int = 0              # model payload bytes in all train replies received
    downlink_bytes: int = 0            # model payload bytes in all train instructions (incl. setup)
    setup_bytes: int = 0               # of which one-time setup (config + packed mask)
    accepted: int = 0
    rejected: int = 0                  # replies that arrived but were malformed
    missing: list[int] = field(default_factory=list)  # partition ids that sent no reply (or an error)
    uplink_per_reply: list[int] = field(default_factory=list)
    downlink_per_message: list[int] = field(default_factory=list)
    train_seconds: list[float] = field(default_factory=list)     # local optimisation only
    client_seconds: list[float] = field(default_factory=list)    # whole train handler
    train_loss: list[float] = field(default_factory=list)
    eval_downlink_bytes: int = 0
    personalized_accuracy: float | None = None
    personalized_clients: int = 0
    started: float = 0.0
    train_wall_seconds: float = 0.0
    setup_messages: int = 0            # train instructions that carried the setup
    # server.secure_aggregation: serialized bytes of SecAgg+'s four stages, summed over nodes:
    # {"up" | "down": {stage: [bytes, nodes]}}
    secagg_bytes: dict = field(default_factory=dict)


@dataclass
class History(Result):
    """Flower's Result + per-round stats, the setup size and the last completed round."""

    rounds: dict[int, RoundStats] = field(default_factory=dict)
    setup_bytes_per_client: int = 0
    completed_round: int = 0

    def stats(self, server_round: int) -> RoundStats:
        return self.rounds.setdefault(server_round, RoundStats())


def count_downlink(stats: RoundStats, content: RecordDict, setup: RecordDict | None,
                   is_train: bool) -> None:
    """Add one server message's payload bytes to the round (``setup``: the setup it carries)."""
    nbytes = wire.payload_nbytes(content)
    if not is_train:
        stats.eval_downlink_bytes += nbytes
        return
    stats.downlink_bytes += nbytes
    stats.downlink_per_message.append(nbytes)
    if setup is not None:
        stats.setup_bytes += wire.payload_nbytes(setup)
        stats.setup_messages += 1


def count_reply(stats: RoundStats, metrics, nbytes: int) -> None:
    """An accepted training reply: its bytes and the client's own timings and loss."""
    stats.accepted += 1
    stats.uplink_per_reply.append(nbytes)
    if "train-seconds" in metrics:
        stats.train_seconds.append(float(metrics["train-seconds"]))
    if "client-seconds" in metrics:
        stats.client_seconds.append(float(metrics["client-seconds"]))
    if "train-loss" in metrics:
        stats.train_loss.append(float(metrics["train-loss"]))
