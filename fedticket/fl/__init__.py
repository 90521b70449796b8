"""fedticket's federated side: HideNseek sign-supermask tickets and baselines on Flower.

For Flower users, the strategies over any ``torch.nn.Module`` (a model factory + a seed)::

    from fedticket.fl import HideNseek, BinaryMask, FedPM, FedAvg, FedAvgSubnet, TicketClient

(:mod:`~fedticket.fl.strategies` on the ServerApp side, :class:`~fedticket.fl.client.TicketClient`
on the ClientApp side; examples/own-model/ is a complete app). Layout:

* :mod:`~fedticket.fl.methods`     one file per method (client learner, server aggregation,
                                   payload kind, evaluation model) + the registry
* :mod:`~fedticket.fl.protocol`    record names, config keys, the setup message (both apps)
* :mod:`~fedticket.fl.wire`        payload codecs (packed bits, float32) and byte counting
* :mod:`~fedticket.fl.strategy`    the one Flower strategy, its round loop returns a History
* :mod:`~fedticket.fl.membership`  node table: discovery, probing, suspects, refusals
* :mod:`~fedticket.fl.replies`     reply collection and validation (pure)
* :mod:`~fedticket.fl.history`     per-round bytes, replies and timings (Flower's Result +)
* :mod:`~fedticket.fl.memgrid`     an in-process Grid (tests, engine-overhead benchmark)
* :mod:`~fedticket.fl.client`      the client side of every method (any ClientApp)
* :mod:`~fedticket.fl.client_app`  fedticket's ClientApp (Message API: query / train / evaluate)
* :mod:`~fedticket.fl.server_app`  fedticket's ServerApp, results folder and plots
* :mod:`~fedticket.fl.checkpoint`  server checkpoints (checksummed) and the resume fingerprint
* :mod:`~fedticket.fl.config`      the validated config schema (every key documented)
* :mod:`~fedticket.fl.dataset`     torchvision data + flwr-datasets partitions, per-client splits
* :mod:`~fedticket.fl.model`       the frozen ticket rebuilt from the seed, train/eval loops
* :mod:`~fedticket.fl.run`         ``fedticket fl run`` on Flower's simulation engine

Imports :mod:`fedticket.core` and the shared plumbing; never the graph side. The public names
load lazily: importing :mod:`fedticket.fl` alone imports neither Flower nor torch.
"""

from __future__ import annotations

_PUBLIC = {"HideNseek": "strategies", "BinaryMask": "strategies", "FedPM": "strategies",
           "FedAvg": "strategies", "FedAvgSubnet": "strategies", "TicketClient": "client",
           "TicketStrategy": "strategy", "History": "history", "InMemoryGrid": "memgrid"}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name in _PUBLIC:
        import importlib

        return getattr(importlib.import_module(f"fedticket.fl.{_PUBLIC[name]}"), name)
    raise AttributeError(f"module 'fedticket.fl' has no attribute {name!r}")
