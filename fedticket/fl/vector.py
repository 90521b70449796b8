"""Model weights <-> one flat float32 vector, optionally only the entries a Mask keeps.

FedAvg sends every floating-point state entry; FedAvg on the subnetwork sends the kept entries of
the masked tensors plus the (small) unmasked ones (biases, BatchNorm), so its uplink is the honest
cost of a float32 sparse model whose sparsity pattern both sides already know.
"""

from __future__ import annotations

import torch
from torch import nn

from fedticket.core import Mask


class WeightVector:
    def __init__(self, model: nn.Module, mask: Mask | None = None):
        state = model.state_dict()
        self.names = [k for k, v in state.items() if v.is_floating_point()]
        self.mask = mask
        self.index: dict[str, torch.Tensor | None] = {}
        n = 0
        for k in self.names:
            if mask is not None and k in mask:
                idx = torch.nonzero(mask[k].reshape(-1)).reshape(-1)
                self.index[k] = idx
                n += idx.numel()
            else:
                self.index[k] = None
                n += state[k].numel()
        self.numel = n

    @torch.no_grad()
    def gather(self, model: nn.Module) -> torch.Tensor:
        state = model.state_dict()
        parts = []
        for k in self.names:
            flat = state[k].detach().reshape(-1).float().cpu()
            idx = self.index[k]
            parts.append(flat if idx is None else flat[idx])
        return torch.cat(parts) if parts else torch.zeros(0)

    @torch.no_grad()
    def scatter(self, model: nn.Module, vector: torch.Tensor) -> None:
        """Write ``vector`` into ``model``; masked-out entries are set to zero."""
        vector = vector.reshape(-1)
        if vector.numel() != self.numel:
            raise ValueError(f"weight vector has {vector.numel()} entries, expected {self.numel}")
        state = model.state_dict()
        off = 0
        for k in self.names:
            t = state[k]
            idx = self.index[k]
            if idx is None:
                t.copy_(vector[off:off + t.numel()].reshape(t.shape).to(t.dtype))
                off += t.numel()
            else:
                full = torch.zeros(t.numel(), dtype=t.dtype)
                full[idx] = vector[off:off + idx.numel()].to(t.dtype)
                t.copy_(full.reshape(t.shape))
                off += idx.numel()
