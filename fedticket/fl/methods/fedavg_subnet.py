"""FedAvg on the SynFlow subnetwork: float32 of the kept weights (+ unmasked biases) only.

The honest cost of a float32 sparse model whose sparsity pattern both sides already know; the
clients keep pruned weights at zero through every optimizer step (core's MaskEnforcer).
"""

from __future__ import annotations

from fedticket.fl.methods.fedavg import FedAvgMethod


class FedAvgSubnetMethod(FedAvgMethod):
    name = "fedavg-subnet"
    dense = False
    subnet = True
