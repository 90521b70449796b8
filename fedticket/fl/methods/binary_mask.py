"""The binary-mask baseline (FedMask-style): a {0,1} supermask over the SynFlow ticket.

Everything is HideNseek's (1-bit uplink, weighted majority vote, the mean_score ablation); only
the supermask kind differs: a bit keeps or drops a frozen weight instead of flipping its sign.
"""

from __future__ import annotations

from fedticket.fl.methods.hidenseek import HideNseekMethod


class BinaryMaskMethod(HideNseekMethod):
    name = "binary-mask"
    kind = "binary"
