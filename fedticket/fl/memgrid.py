"""An in-process Flower ``Grid``: the real ClientApp answers every message, in this process.

The strategy's round loop is the project's only round loop: Flower's engines run it over the
network (deployment) or over Ray (``fedticket fl run``), and this Grid runs it with no engine at
all, for the tests and for the engine-overhead benchmark. Every message goes through
``ClientApp.__call__`` with the node's own :class:`~flwr.app.Context`, exactly as a SuperNode
would dispatch it; a handler exception becomes an error reply, as Flower makes it.

Faults for tests: a node in ``silent`` never answers (a SIGKILLed SuperNode, until its heartbeat
expires), one in ``failing`` answers with an error, :meth:`restart` gives a node a fresh Context
(its process lost the setup and its local state), and ``online`` is what ``get_node_ids`` reports.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable

from flwr.app import Context, Error, Message, RecordDict
from flwr.serverapp import Grid
from flwr.supercore.task_identity import TaskIdentity

from fedticket.fl import protocol

SERVER_NODE = 1
ERROR_CLIENT_EXCEPTION = 2   # Flower's ErrorCode.CLIENT_APP_RAISED_EXCEPTION


class InMemoryGrid(Grid):
    """``nodes``: node id -> partition id; ``client_app``: a ``flwr.clientapp.ClientApp``."""

    def __init__(self, client_app, nodes: dict[int, int], num_partitions: int | None = None,
                 node_config: dict | None = None, run_config: dict | None = None,
                 run_id: int = 1):
        self.client_app = client_app
        self.num_partitions = len(nodes) if num_partitions is None else num_partitions
        self.node_config = dict(node_config or {})
        self.run_config = dict(run_config or {})
        self.run_id = run_id
        self.contexts = {n: self._context(n, p) for n, p in nodes.items()}
        self.online: set[int] = set(self.contexts)
        self.silent: set[int] = set()
        self.failing: dict[int, str] = {}          # node -> reason of its error replies
        self._ids = itertools.count(1)
        self._replies: dict[str, Message] = {}
        # a ServerApp process has a task identity (the runtime sets it); Messages need one
        TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = run_id, 1, SERVER_NODE

    @classmethod
    def for_partitions(cls, client_app, num_partitions: int, first_node: int = 1000,
                       step: int = 7, **kwargs) -> "InMemoryGrid":
        """One node per partition; node ids differ from partition ids on purpose."""
        return cls(client_app, {first_node + step * p: p for p in range(num_partitions)},
                   num_partitions, **kwargs)

    def _context(self, node: int, pid: int) -> Context:
        config = {protocol.PARTITION: pid, protocol.NUM_PARTITIONS: self.num_partitions,
                  **self.node_config}
        return Context(run_id=self.run_id, node_id=node, node_config=config, state=RecordDict(),
                       run_config=dict(self.run_config))

    def restart(self, node: int) -> None:
        """A fresh process for ``node``: its Context.state (setup, local scores) is gone."""
        self.contexts[node] = self._context(node, self.contexts[node].node_config[protocol.PARTITION])
        self.silent.discard(node)
        self.failing.pop(node, None)

    # ---- Grid -----------------------------------------------------------------------------------
    def set_run(self, run) -> None:
        self._run = run

    @property
    def run(self):
        return getattr(self, "_run", None)

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int,
                       group_id: str, ttl: float | None = None) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return sorted(self.online)

    def deliver(self, message: Message) -> Message | None:
        """The reply of the message's node (None: it never answers)."""
        node = message.metadata.dst_node_id
        if node not in self.online or node in self.silent:
            return None
        if node in self.failing:
            return Message(Error(code=1, reason=self.failing[node]), reply_to=message)
        try:
            return self.client_app(message, self.contexts[node])
        except Exception as e:  # what Flower turns a ClientApp exception into
            return Message(Error(code=ERROR_CLIENT_EXCEPTION, reason=f"{type(e).__name__}: {e}"),
                           reply_to=message)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for msg in messages:
            mid = f"m{next(self._ids)}"
            msg.metadata.__dict__["_message_id"] = mid   # what a SuperLink does on push
            reply = self.deliver(msg)
            if reply is not None:
                self._replies[mid] = reply
            ids.append(mid)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self._replies.pop(m) for m in message_ids if m in self._replies]

    def send_and_receive(self, messages: Iterable[Message], *,
                         timeout: float | None = None) -> Iterable[Message]:
        return list(self.pull_messages(self.push_messages(messages)))
