"""fedticket's methods as Flower Message-API strategies over any ``torch.nn.Module``.

    from fedticket.fl import HideNseek

    strategy = HideNseek(model_fn=Net, input_shape=(1, 28, 28), num_clients=10,
                         clients_per_round=5, seed=0, density=0.1, options={"train.lr": 0.1})
    result = strategy.start(grid, strategy.initial_arrays(), num_rounds=20,
                            evaluate_fn=lambda r, arrays: my_eval(strategy.global_model(arrays, r)))

``model_fn`` builds the user's model (no argument); it is called under ``seed`` on the server and
on every client (:class:`fedticket.fl.client.TicketClient`), so the frozen weights never travel.
The server prunes it with SynFlow to ``density`` (data-free, from one example's
``input_shape``); the mask and the run config travel once per client in the setup message.
``options`` takes any key of the federated config schema by its dotted name (``train.lr``,
``train.optimizer``, ``eval.personal_every``, ``server.train_timeout``, ``fedpm.prior`` ...;
docs/fl.md lists them); the model and data keys are not used. ``start`` returns a
:class:`~fedticket.fl.history.History` (Flower's ``Result`` + per-round bytes and replies).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from flwr.app import ArrayRecord
from torch import nn

from fedticket.fl import protocol
from fedticket.fl.config import load_fl_config
from fedticket.fl.methods import make_method, method_class
from fedticket.fl.model import user_ticket
from fedticket.fl.strategy import TicketStrategy


class _UserModelStrategy(TicketStrategy):
    """A :class:`TicketStrategy` whose ticket is the user's model, pruned here."""

    METHOD = ""

    def __init__(self, model_fn: Callable[[], nn.Module], *, num_clients: int,
                 clients_per_round: int | None = None, input_shape=None, seed: int = 0,
                 density: float = 0.1, prune_iterations: int = 100,
                 options: Mapping[str, Any] | None = None):
        base = {"method": self.METHOD, "seed": int(seed), "density": float(density),
                "num_clients": int(num_clients),
                "clients_per_round": int(clients_per_round or num_clients),
                "model": {"prune_iterations": int(prune_iterations)}}
        overrides = [f"{k}={json.dumps(v)}" for k, v in (options or {}).items()]
        cfg = load_fl_config(None, overrides, base=base)
        ticket = user_ticket(model_fn, cfg, input_shape, dense=method_class(self.METHOD).dense)
        super().__init__(cfg, make_method(cfg, ticket))

    def start(self, grid, initial_arrays: ArrayRecord, num_rounds: int = 3, **kwargs):
        """Flower's ``start``; the last round (personal evaluation runs there) is ``num_rounds``."""
        self.cfg.rounds = int(num_rounds)
        return super().start(grid, initial_arrays, num_rounds=num_rounds, **kwargs)

    def global_model(self, arrays: ArrayRecord, server_round: int = 0) -> nn.Module:
        """The global model a round's arrays stand for (the user's module, in eval mode)."""
        return self.method.eval_model(arrays[protocol.PAYLOAD], server_round)


class HideNseek(_UserModelStrategy):
    """Sign supermask, 1 bit per kept weight, weighted majority vote (docs/fl.md)."""

    METHOD = "hidenseek"


class BinaryMask(_UserModelStrategy):
    """{0,1} supermask (FedMask-style), 1 bit per kept weight, weighted majority vote."""

    METHOD = "binary-mask"


class FedPM(_UserModelStrategy):
    """Bernoulli mask, one packed sample up, Beta-posterior probabilities down."""

    METHOD = "fedpm"


class FedAvg(_UserModelStrategy):
    """FedAvg over every float32 weight (dense: ``density`` and ``input_shape`` unused)."""

    METHOD = "fedavg"


class FedAvgSubnet(_UserModelStrategy):
    """FedAvg over the float32 weights SynFlow keeps (+ unmasked biases)."""

    METHOD = "fedavg-subnet"
