"""The TEDDY code's random streams, so that a seed gives the run the TEDDY code gives for it.

fedticket's method is the TEDDY code's, but its random draws are its own: one Glorot draw per
weight matrix and a 16-bit dropout mask (``graph.models.dropout``), with torch re-seeded between
the initialisation and the training. The TEDDY code (``main_teddy.py``: ``setup_seed(seed)``, then
the model, then the 200 steps, at every level) draws:

* **the initial weights through its modules**: each ``GCNConv`` builds a PyG
  ``Linear(weight_initializer='glorot')``, whose constructor resets it, and then resets it again
  in its own ``reset_parameters``, so every matrix is drawn *twice* (the second draw stays); its
  ``GINConv`` wraps a ``torch.nn.Linear`` (reset in the constructor and again by the conv), and
  the readout ``mlp`` is a plain ``nn.Linear`` (one draw). Weights are drawn in module order;
* **the dropout masks with** ``F.dropout`` (one float per entry from torch's generator), from
  the generator state right after the initialisation: nothing re-seeds in between.

:func:`official_init_` redraws a fedticket model's weights in that order from ``seed`` and
returns the (CPU) generator state the training must start from, as the sweep runs on CPU; the models draw their dropout with
``F.dropout`` when ``torch_dropout`` is set. With ``rng: official`` (``graph.config``) a sweep
does both and trains level by level (the batched fast path draws its own masks). The floating-point
sums still differ (torch_sparse's products there, CSR products here), so runs are close, not
bit-identical. The TEDDY code's GAT is 8 heads x 512 channels (this one 8 x 64), so no seed of
this GAT is one of its runs, and ``rng: official`` is for GCN and GIN only.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from graph.models import GCN, GIN

SUPPORTED = ("gcn", "gin")


def _glorot_(w: Tensor) -> None:
    # torch_geometric.nn.inits.glorot, what PyG's Linear(weight_initializer='glorot') calls
    a = math.sqrt(6.0 / (w.size(-2) + w.size(-1)))
    with torch.no_grad():
        w.uniform_(-a, a)


def _torch_linear_(w: Tensor) -> None:
    # torch.nn.Linear.reset_parameters' weight draw (no bias in the TEDDY code's layers)
    nn.init.kaiming_uniform_(w, a=math.sqrt(5))


def official_init_(model: nn.Module, seed: int) -> Tensor:
    """Seed torch with ``seed``, draw ``model``'s weights as the TEDDY code's model of the same
    shape draws them, switch its dropout to ``F.dropout``, and return the generator state
    right after (where the TEDDY code's training starts)."""
    if isinstance(model, GCN):
        draws = [(model.conv1.weight, _glorot_, 2), (model.conv2.weight, _glorot_, 2)]
    elif isinstance(model, GIN):
        draws = [(model.conv1.weight, _torch_linear_, 2), (model.conv2.weight, _torch_linear_, 2),
                 (model.mlp, _torch_linear_, 1)]
    else:
        raise ValueError(f"the TEDDY code's streams are reproduced for {', '.join(SUPPORTED)}, "
                         f"not {type(model).__name__}")
    torch.manual_seed(seed)
    for w, draw, times in draws:
        for _ in range(times):
            draw(w)
    if isinstance(model, GIN):
        with torch.no_grad():  # GINConv(train_eps=True) starts at eps = 0
            model.conv1.eps.zero_()
            model.conv2.eps.zero_()
    model.torch_dropout = True
    return torch.get_rng_state()


__all__ = ["SUPPORTED", "official_init_"]
