"""fedticket's federated side: HideNseek sign-supermask tickets and baselines on Flower.

Layout follows Flower's baseline template:

* :mod:`~fedticket.fl.config`      the validated config schema (every key documented)
* :mod:`~fedticket.fl.dataset`     torchvision data + flwr-datasets partitions, per-client splits
* :mod:`~fedticket.fl.model`       the frozen ticket rebuilt from the seed, train/eval loops
* :mod:`~fedticket.fl.wire`        payload codecs (packed bits, float32) and byte counting
* :mod:`~fedticket.fl.learners`    client halves of the methods
* :mod:`~fedticket.fl.strategy`    server halves of the methods (Flower ``Strategy`` subclasses)
* :mod:`~fedticket.fl.client_app`  the ClientApp (Message API: query / train / evaluate)
* :mod:`~fedticket.fl.server_app`  the ServerApp, results folder and plots
* :mod:`~fedticket.fl.run`         ``fedticket fl run`` on Flower's simulation engine (Ray)
* :mod:`~fedticket.fl.plain`       the same clients in a plain loop (engine-overhead yardstick)

Imports :mod:`fedticket.core` and the shared plumbing; never the graph side.
"""
