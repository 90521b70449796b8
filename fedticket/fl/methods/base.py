"""What every method is made of: a :class:`Method` (payload kind, server aggregation, the
server's evaluation model) and its client half, a :class:`Learner` (load the global payload,
train, emit the update, expose a personal evaluation model).

Both halves start from the same frozen ticket (the seed's weights + the SynFlow mask) and the
run config. The strategy and the ClientApp only talk to these two classes, so a new method is one
file in this package plus one line in its registry (``fedticket/fl/methods/__init__.py``).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from functools import cached_property

import torch
from flwr.app import Array
from torch import nn

from fedticket.fl import wire
from fedticket.fl.model import Ticket, train_epochs
from fedticket.fl.robust import Reputation, make_reputation

REPUTATION = "reputation."   # the vote weights' state, under its own names in state()


def client_seed(cfg, server_round: int, partition_id: int, phase: int) -> int:
    """One seed per (run seed, round, client, phase): reruns repeat every random draw."""
    return (cfg.seed * 1_000_003 + server_round * 10_007 + partition_id * 101 + phase) % (2**63)


def plain_copy(model: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
    """A copy of ``model`` holding ``state``, in eval mode: what gets evaluated."""
    m = copy.deepcopy(model)
    m.load_state_dict(state)
    return m.eval()


class Learner:
    """Client half: the global payload in, local training, one payload out."""

    # (round, signs) of the last global this node trained from (its Context.state), set by the
    # client before load_global: a method whose server codes per node may code against it
    held_global: tuple[int, torch.Tensor] | None = None

    def __init__(self, cfg, ticket: Ticket, partition_id: int,
                 local_state: torch.Tensor | None = None):
        self.cfg = cfg
        self.ticket = ticket
        self.partition_id = partition_id

    def load_global(self, array: Array) -> None:
        raise NotImplementedError

    def module(self) -> nn.Module:
        """The module trained (and used in forward)."""
        raise NotImplementedError

    def optimizer(self) -> torch.optim.Optimizer:
        raise NotImplementedError

    def train(self, x, y, server_round: int, max_steps: int | None = None,
              epochs: int | None = None) -> tuple[float, int]:
        torch.manual_seed(client_seed(self.cfg, server_round, self.partition_id, 1))
        g = torch.Generator().manual_seed(client_seed(self.cfg, server_round, self.partition_id, 2))
        opt = self.optimizer()
        hook = self._hook(opt)
        try:
            return train_epochs(self.module(), opt, x, y, epochs=epochs or self.cfg.train.local_epochs,
                                batch_size=self.cfg.train.batch_size, generator=g,
                                max_steps=self.cfg.train.max_steps if max_steps is None else max_steps)
        finally:
            if hook is not None:
                hook.remove()

    def _hook(self, opt):
        return None

    def update(self, server_round: int) -> Array:
        raise NotImplementedError

    def eval_model(self) -> nn.Module:
        raise NotImplementedError

    def local_state(self) -> torch.Tensor | None:
        """State that must outlive the round (kept in the node's Context.state), or None."""
        return None

    def global_to_keep(self) -> torch.Tensor | None:
        """Bits of the loaded global the node keeps as its ``held_global`` (None: nothing)."""
        return None

    def coding_reference(self) -> torch.Tensor | None:
        """The global signs a range-coded uplink is coded against (None: the uplink is not)."""
        return None


class Method:
    """Server half and payload kind of one method; ``learner`` builds its client half.

    ``dense=True``: the ticket keeps every weight (no SynFlow pruning, density reported as 1).
    """

    name = ""
    uplink_kind = wire.BITS
    dense = False
    # partition ids of the updates the next aggregate() gets, in order; set by the strategy
    # before each aggregate (robust.kind=reputation weighs a vote by who cast it)
    clients: Sequence[int] = ()

    def __init__(self, cfg, ticket: Ticket):
        self.cfg = cfg
        self.ticket = ticket

    # ---- payload ----------------------------------------------------------------------------
    @property
    def uplink_values(self) -> int:
        """Number of entries (bits or floats) in one client update."""
        return self.ticket.kept

    def decode_update(self, array) -> torch.Tensor:
        """A client's update as a flat tensor, or wire.MalformedPayload with the reason."""
        if self.uplink_kind == wire.BITS:
            return wire.decode_bits_array(array, self.uplink_values)
        return wire.decode_floats_array(array, self.uplink_values)

    # ---- server -----------------------------------------------------------------------------
    def on_broadcast(self, server_round: int, array: Array) -> None:
        """The global payload sent to this round's clients (a coded uplink is relative to it)."""

    def downlink(self, partition_id: int, server_round: int, array: Array, train: bool) -> Array:
        """The payload one node gets for the global ``array`` (default: the same for all; a
        method may code it against what that node holds)."""
        return array

    def delivered(self, server_round: int, sent: Sequence[int], acked: Sequence[int]) -> None:
        """This round's train messages went to ``sent``; ``acked`` replied with a valid update
        (so they hold what they were sent). Default: nothing to remember."""

    def initial_global(self) -> Array:
        raise NotImplementedError

    def aggregate(self, server_round: int, updates: list[torch.Tensor], weights: list[int],
                  current: Array) -> Array:
        raise NotImplementedError

    def eval_model(self, global_array: Array, server_round: int) -> nn.Module:
        raise NotImplementedError

    @cached_property
    def reputation(self) -> Reputation | None:
        """robust.kind=reputation's per-client agreements (None otherwise); vote methods use it."""
        return make_reputation(self.cfg)

    # ---- checkpointed server state ----------------------------------------------------------
    def state(self) -> dict[str, torch.Tensor]:
        """Every tensor the server half carries from one round to the next, by name.

        The checkpoint saves it after each round and a resumed server gets it back through
        :meth:`load_state`, so a resumed run computes the rounds of an uninterrupted one. Called
        after :meth:`initial_global`, it must already hold every name (initial values), with the
        shapes and dtypes of every later round: the checkpoint checks a saved state against it.
        Subclasses extend it: ``{**super().state(), "name": tensor}``. Default: the reputation
        agreements when robust.kind=reputation, else nothing.
        """
        rep = self.reputation
        if rep is None:
            return {}
        return {REPUTATION + k: v for k, v in rep.state(self.cfg.num_clients).items()}

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        """Take back what :meth:`state` returned (names, shapes, dtypes already checked)."""
        if self.reputation is not None:
            self.reputation.load_state({k[len(REPUTATION):]: v for k, v in state.items()
                                        if k.startswith(REPUTATION)})

    # ---- client -----------------------------------------------------------------------------
    def learner(self, partition_id: int, local_state: torch.Tensor | None = None) -> Learner:
        raise NotImplementedError
