"""The registry of federated methods: name (the config's ``method``) -> :class:`Method` class.

A new method is one file in this package (a :class:`~fedticket.fl.methods.base.Method` and its
:class:`~fedticket.fl.methods.base.Learner`) plus one line below; docs/fl.md walks through it.
"""

from __future__ import annotations

from fedticket.errors import ConfigError
from fedticket.fl.methods.base import Learner, Method
from fedticket.fl.methods.binary_mask import BinaryMaskMethod
from fedticket.fl.methods.fedavg import FedAvgMethod
from fedticket.fl.methods.fedavg_subnet import FedAvgSubnetMethod
from fedticket.fl.methods.fedpm import FedPMMethod
from fedticket.fl.methods.hidenseek import HideNseekMethod
from fedticket.fl.methods.signcare import SignCareMethod
from fedticket.fl.methods.signscore import SignScoreMethod

REGISTRY: dict[str, type[Method]] = {
    "hidenseek": HideNseekMethod,
    "binary-mask": BinaryMaskMethod,
    "fedpm": FedPMMethod,
    "fedavg": FedAvgMethod,
    "fedavg-subnet": FedAvgSubnetMethod,
    "signscore": SignScoreMethod,
    "signscore-care": SignCareMethod,
}


def method_class(name: str) -> type[Method]:
    if name not in REGISTRY:
        raise ConfigError(f"method={name!r} is not a federated method; choose one of "
                          f"{', '.join(REGISTRY)}")
    return REGISTRY[name]


def make_method(cfg, ticket) -> Method:
    """The method of ``cfg.method`` over ``ticket`` (both the server's and a client's)."""
    return method_class(cfg.method)(cfg, ticket)


__all__ = ["REGISTRY", "Method", "Learner", "method_class", "make_method"]
