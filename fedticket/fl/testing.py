"""Small deterministic tickets for tests of federated methods (like ``torch.testing``: shipped so
that the test modules of fedticket, and of a user's own method, share one definition)."""

from __future__ import annotations

import torch
from torch import nn

from fedticket.core import Mask
from fedticket.fl.model import Ticket, make_ticket


def toy_ticket(seed: int = 0, density: float = 0.3) -> Ticket:
    """A 12-20-3 MLP ticket: weights from ``seed``, a random mask of ``density`` over its two
    weight matrices (biases never pruned), scaled by the density as SynFlow tickets are."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 20), nn.ReLU(), nn.Linear(20, 3))
    g = torch.Generator().manual_seed(seed + 1)
    mask = Mask({n: torch.rand(p.shape, generator=g) < density
                 for n, p in model.named_parameters() if p.ndim == 2})
    return make_ticket(model, mask, scale_by_density=True)
