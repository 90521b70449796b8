"""Two-layer GCN, GAT and GIN that all take an optional per-edge weight.

Why our own layers rather than ``torch_geometric.nn.GCNConv`` & co.:

* UGS learns a soft mask per edge, so every model must multiply each message by a differentiable
  edge weight. PyG's ``GATConv`` and ``GINConv`` have no such argument (``edge_attr`` feeds a
  learned projection, which is not a mask).
* The first layer takes :class:`graph.features.SparseFeatures` (bag-of-words features in CSR), which
  makes an epoch several times cheaper on CPU; PyG's ``Linear`` only takes dense input.

The message passing itself uses PyG utilities (``gcn_norm``, ``add_remaining_self_loops``,
``softmax``), so the maths is PyG's. Weights follow the TEDDY/UGS code: no biases on the GCN and
GAT layers (so every parameter a mask touches is a weight matrix or an attention vector).

Edge-weight semantics, all with ``edge_weight = None`` meaning 1 on every edge:

* GCN: the weight scales each edge's entry of ``Â = D^-1/2 (A + I) D^-1/2`` (normalised from the
  structure, so a 0 weight silences an edge exactly and no degree ever vanishes);
* GAT: a weighted softmax, ``α_ij ∝ |w_ij| exp(e_ij)``, so a weight of 0 removes the edge exactly
  (from the normaliser too) and gradients reach the weight;
* GIN: ``(1 + eps) h_i + Σ_j w_ij h_j``.

Parameter names (what a Mask keys on): ``conv1.weight``, ``conv2.weight`` and, for GAT,
``conv{1,2}.att_src`` / ``att_dst`` (shape ``[1, heads, channels]``), for GIN ``conv{1,2}.eps``
and the readout ``mlp``. TEDDY's ℓ0 projection covers all of them (``teddy.project: all``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.utils import add_remaining_self_loops, scatter, softmax

from graph.features import SparseFeatures, SparseFeaturesView, linear
from graph.ops import AdjacencyCache, FixedAdjacency, spmm

MODEL_NAMES = ("gcn", "gat", "gin")


def _glorot_(w: Tensor) -> None:
    fan_out, fan_in = w.size(-2), w.size(-1)
    a = math.sqrt(6.0 / (fan_in + fan_out))
    with torch.no_grad():
        w.uniform_(-a, a)


def _linear_init_(w: Tensor) -> None:
    """``torch.nn.Linear``'s default, U(±1/√fan_in) (kaiming-uniform with a = √5): the TEDDY/UGS
    GIN builds its layers from ``nn.Linear``, so they start about 2x smaller than Glorot's."""
    a = 1.0 / math.sqrt(w.size(-1))
    with torch.no_grad():
        w.uniform_(-a, a)


_INITS = {"linear": _linear_init_, "glorot": _glorot_}


class GCNLayer(nn.Module):
    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_dim, in_dim))
        _glorot_(self.weight)

    def forward(self, x, edge_index: Tensor, norm: Tensor | None, num_nodes: int,
                adj: FixedAdjacency | None = None) -> Tensor:
        h = linear(x, self.weight)
        return adj @ h if adj is not None else spmm(edge_index, norm, h, num_nodes)


class GCN(nn.Module):
    """Kipf & Welling GCN: ``Â relu(Â X W1) W2`` with dropout on the hidden layer.

    ``Â = D^-1/2 (A + I) D^-1/2`` is computed from the structure (the edges present, one weight-1
    self-loop per node); an ``edge_weight`` then scales each edge's message of ``Â``, as UGS's
    mask multiplies the normalised adjacency. Because the normalisation never sees the weights, a
    learnable mask can take any value (even negative) without a degree turning zero or negative.
    """

    def __init__(self, in_dim: int, hidden: int, out_dim: int, dropout: float = 0.5):
        super().__init__()
        self.conv1 = GCNLayer(in_dim, hidden)
        self.conv2 = GCNLayer(hidden, out_dim)
        self.dropout = dropout
        self.torch_dropout = False  # True: F.dropout's draw, the TEDDY code's (graph.streams)
        self._adj = AdjacencyCache()

    def forward(self, x, edge_index: Tensor, edge_weight: Tensor | None = None) -> Tensor:
        n = x.shape[0]
        dtype = self.conv1.weight.dtype
        adj = None
        if edge_weight is None or not edge_weight.requires_grad:
            # the same graph every epoch: normalise and build the CSR once, not per layer call
            adj = self._adj.get(edge_index, edge_weight, lambda: FixedAdjacency(
                *normalized_adjacency(edge_index, edge_weight, n, dtype), n, dtype))
            ei = norm = None
        else:
            ei, norm = normalized_adjacency(edge_index, edge_weight, n, dtype)
        h = F.relu(self.conv1(x, ei, norm, n, adj))
        h = _hidden_dropout(self, h, self.training)
        return self.conv2(h, ei, norm, n, adj)

    def forward_shared(self, x, edge_index: Tensor, edge_weight: Tensor | None = None):
        """``(training logits, eval logits)`` of the current weights in one pass.

        The first layer has no dropout before it, so its output is the same in train and eval
        mode: computing it once and branching only after it gives the eval-mode logits for the
        price of the small second layer (the training loop uses them as the previous step's
        validation pass, identical to a separate eval forward).
        """
        n = x.shape[0]
        dtype = self.conv1.weight.dtype
        adj = self._adj.get(edge_index, edge_weight, lambda: FixedAdjacency(
            *normalized_adjacency(edge_index, edge_weight, n, dtype), n, dtype))
        h = F.relu(self.conv1(x, None, None, n, adj))
        with torch.no_grad():
            ev = adj.a @ F.linear(h.detach(), self.conv2.weight)
        return self.conv2(_hidden_dropout(self, h, True), None, None, n, adj), ev


def normalized_adjacency(edge_index: Tensor, edge_weight: Tensor | None, num_nodes: int,
                         dtype=torch.float32) -> tuple[Tensor, Tensor]:
    """Edges of ``Â = D^-1/2 (A + I) D^-1/2`` (loops replaced by one per node) times ``edge_weight``."""
    keep = edge_index[0] != edge_index[1]
    ei = edge_index[:, keep]
    loops = torch.arange(num_nodes, device=edge_index.device)
    ei = torch.cat([ei, torch.stack([loops, loops])], dim=1)
    deg = torch.ones(num_nodes, dtype=dtype, device=edge_index.device)
    deg.index_add_(0, ei[1, :-num_nodes] if num_nodes else ei[1],
                   torch.ones(int(keep.sum()), dtype=dtype, device=edge_index.device))
    dis = deg.rsqrt()
    norm = dis[ei[0]] * dis[ei[1]]
    if edge_weight is not None:
        w = torch.cat([edge_weight[keep].to(dtype), torch.ones(num_nodes, dtype=dtype,
                                                                device=edge_index.device)])
        norm = norm * w
    return ei, norm


class GATLayer(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, heads: int, concat: bool, dropout: float):
        super().__init__()
        self.heads, self.out_dim, self.concat, self.dropout = heads, out_dim, concat, dropout
        self.weight = nn.Parameter(torch.empty(heads * out_dim, in_dim))
        self.att_src = nn.Parameter(torch.empty(1, heads, out_dim))
        self.att_dst = nn.Parameter(torch.empty(1, heads, out_dim))
        _glorot_(self.weight)
        _glorot_(self.att_src)
        _glorot_(self.att_dst)

    def forward(self, x, edge_index: Tensor, edge_weight: Tensor | None, num_nodes: int) -> Tensor:
        H, C = self.heads, self.out_dim
        h = linear(x, self.weight).view(-1, H, C)
        a_src = (h * self.att_src).sum(-1)
        a_dst = (h * self.att_dst).sum(-1)
        src, dst = edge_index
        alpha = F.leaky_relu(a_src.index_select(0, src) + a_dst.index_select(0, dst), 0.2)
        alpha = weighted_softmax(alpha, dst, edge_weight, num_nodes)
        alpha = dropout(alpha, self.dropout, self.training)
        out = _gat_aggregate(h, src, dst, alpha, num_nodes)
        return out.reshape(-1, H * C) if self.concat else out.mean(dim=1)


def weighted_softmax(logits: Tensor, dst: Tensor, weight: Tensor | None, num_nodes: int) -> Tensor:
    """``α_ij = |w_ij| exp(e_ij) / Σ_k |w_ik| exp(e_ik)`` over the edges into each node ``i``.

    With all weights 1 this is GAT's softmax; a weight of 0 removes the edge from the numerator
    *and* the denominator, exactly as if it were absent, and gradients reach ``w``. The magnitude
    is used so that a learnable mask that drifts below zero (UGS's ℓ1 pushes it there) still means
    "how much of this edge", as in UGS's magnitude-based pruning.
    """
    if weight is None:
        return softmax(logits, dst, num_nodes=num_nodes)
    m = scatter(logits.detach(), dst, dim=0, dim_size=num_nodes, reduce="max")
    ex = torch.exp(logits - m.index_select(0, dst)) * weight.abs().view(-1, *([1] * (logits.dim() - 1)))
    den = scatter(ex, dst, dim=0, dim_size=num_nodes, reduce="sum")
    return ex / (den.index_select(0, dst) + 1e-16)


def _gat_aggregate(h: Tensor, src: Tensor, dst: Tensor, alpha: Tensor, num_nodes: int) -> Tensor:
    """Per-head weighted sum (gather/scatter: each head has its own coefficients)."""
    msg = h.index_select(0, src) * alpha.unsqueeze(-1)
    out = torch.zeros((num_nodes,) + tuple(h.shape[1:]), dtype=h.dtype, device=h.device)
    return out.index_add_(0, dst, msg)


class GAT(nn.Module):
    """Veličković et al. GAT: ``heads`` attention heads (concatenated) then one averaged output head.

    ``hidden`` is the total hidden width; each head has ``hidden // heads`` channels, so GAT with
    ``hidden=512, heads=8`` is as wide as the 512-unit GCN. Dropout on the input, the hidden layer
    and the first layer's attention is ``dropout`` (0.6 in the GAT paper); the output layer's
    attention dropout is ``out_attention_dropout``, 0 as in the TEDDY/UGS code (its last
    ``GATConv`` has ``dropout=0.``).
    """

    def __init__(self, in_dim: int, hidden: int, out_dim: int, heads: int = 8, dropout: float = 0.6,
                 out_attention_dropout: float = 0.0):
        super().__init__()
        if hidden % heads:
            raise ValueError(f"GAT hidden size {hidden} must be divisible by heads={heads}")
        self.conv1 = GATLayer(in_dim, hidden // heads, heads, concat=True, dropout=dropout)
        self.conv2 = GATLayer(hidden, out_dim, 1, concat=False, dropout=out_attention_dropout)
        self.dropout = dropout

    def forward(self, x, edge_index: Tensor, edge_weight: Tensor | None = None) -> Tensor:
        n = x.shape[0]
        ei, ew = add_remaining_self_loops(edge_index, edge_weight, 1.0, n)
        x = _input_dropout(x, self.dropout, self.training)
        h = F.elu(self.conv1(x, ei, ew, n))
        h = dropout(h, self.dropout, self.training)
        return self.conv2(h, ei, ew, n)


class GINLayer(nn.Module):
    """GIN with a one-layer linear ``nn`` (as in the TEDDY/UGS code) and a learnable ``eps``.

    Because the ``nn`` is linear, ``W((1+eps) x_i + Σ w_ij x_j) = (1+eps) W x_i + Σ w_ij W x_j``:
    we transform first and aggregate second, which is exact and lets the first layer use sparse
    features.
    """

    def __init__(self, in_dim: int, out_dim: int, init: str = "linear"):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_dim, in_dim))
        self.eps = nn.Parameter(torch.zeros(1))
        _INITS[init](self.weight)

    def forward(self, x, edge_index: Tensor, edge_weight: Tensor | None, num_nodes: int,
                adj: FixedAdjacency | None = None) -> Tensor:
        h = linear(x, self.weight)
        agg = adj @ h if adj is not None else spmm(edge_index, edge_weight, h, num_nodes)
        return (1.0 + self.eps) * h + agg


class GIN(nn.Module):
    """TEDDY's GIN: two GIN layers, each followed by ReLU, and a jumping readout
    ``(mlp(h1) + h2) / 2`` where ``mlp`` maps the first layer's output to the classes.

    The TEDDY/UGS code has no dropout in its GIN; ``dropout`` (on ``h1`` before the second layer)
    is 0 in the shipped configs and kept as an option. Its three matrices are ``nn.Linear``
    layers with torch's default initialisation, U(±1/√fan_in) (``init="linear"``, the default
    here too); ``init="glorot"`` is the Glorot-uniform start of the GCN and GAT layers.
    """

    def __init__(self, in_dim: int, hidden: int, out_dim: int, dropout: float = 0.0,
                 init: str = "linear"):
        super().__init__()
        if init not in _INITS:
            raise ValueError(f"GIN init must be one of {', '.join(_INITS)}, got {init!r}")
        self.conv1 = GINLayer(in_dim, hidden, init)
        self.conv2 = GINLayer(hidden, out_dim, init)
        self.mlp = nn.Parameter(torch.empty(out_dim, hidden))
        _INITS[init](self.mlp)
        self.dropout = dropout
        self.torch_dropout = False
        self._adj = AdjacencyCache()

    def forward(self, x, edge_index: Tensor, edge_weight: Tensor | None = None) -> Tensor:
        n = x.shape[0]
        ei, ew = _drop_loops(edge_index, edge_weight)
        adj = None
        if ew is None or not ew.requires_grad:
            adj = self._adj.get(edge_index, edge_weight, lambda: FixedAdjacency(
                ei, ew, n, self.conv1.weight.dtype))
        h1 = F.relu(self.conv1(x, ei, ew, n, adj))
        h2 = F.relu(self.conv2(_hidden_dropout(self, h1, self.training), ei, ew, n, adj))
        return (F.linear(h1, self.mlp) + h2) / 2

    def forward_shared(self, x, edge_index: Tensor, edge_weight: Tensor | None = None):
        """``(training logits, eval logits)``; without dropout (TEDDY's GIN) they are one pass."""
        out = self.forward(x, edge_index, edge_weight)
        if self.dropout > 0:
            was = self.training
            self.eval()
            with torch.no_grad():
                ev = self.forward(x, edge_index, edge_weight)
            self.train(was)
            return out, ev
        return out, out.detach()


def _drop_loops(edge_index: Tensor, edge_weight: Tensor | None):
    """GIN's self term is ``1 + eps``; an explicit self-loop would count the node twice."""
    keep = edge_index[0] != edge_index[1]
    if bool(keep.all()):
        return edge_index, edge_weight
    return edge_index[:, keep], (None if edge_weight is None else edge_weight[keep])


def dropout(h: Tensor, p: float, training: bool) -> Tensor:
    """Inverted dropout from 16 random bits per entry (``p`` resolved to 1/65536).

    ``F.dropout`` draws one 32-bit float per entry through the CPU generator; drawing 64-bit
    integers and reading each as four 16-bit lanes needs a quarter of the generator calls, and
    dropout was the largest item of a GCN epoch on Cora after the sparse products.
    """
    if not training or p <= 0.0:
        return h
    n = h.numel()
    bits = torch.randint(-2 ** 63, 2 ** 63 - 1, ((n + 3) // 4,), dtype=torch.int64,
                         device=h.device).view(torch.int16)[:n].view(h.shape)
    keep = bits >= (int(round(p * 65536)) - 32768)
    return (h * keep).mul_(1.0 / (1.0 - p))  # (masked_fill and where are slower on CPU)


def _hidden_dropout(model: nn.Module, h: Tensor, training: bool) -> Tensor:
    """The hidden layer's dropout: :func:`dropout` or, with ``model.torch_dropout``,
    ``F.dropout`` (one float per entry from torch's generator: the TEDDY code's draw, so a run
    seeded like it sees its masks; ``graph.streams``)."""
    if getattr(model, "torch_dropout", False):
        return F.dropout(h, model.dropout, training)
    return dropout(h, model.dropout, training)


def _input_dropout(x, p: float, training: bool):
    if isinstance(x, SparseFeatures):
        return x.dropout(p, training)
    if isinstance(x, SparseFeaturesView):
        return x
    return dropout(x, p, training)


def build_model(name: str, in_dim: int, num_classes: int, hidden: int = 512, heads: int = 8,
                dropout: float = 0.5) -> nn.Module:
    """One of :data:`MODEL_NAMES`, two layers, ``hidden`` units."""
    name = name.lower()
    if name == "gcn":
        return GCN(in_dim, hidden, num_classes, dropout)
    if name == "gat":
        return GAT(in_dim, hidden, num_classes, heads, dropout)
    if name == "gin":
        return GIN(in_dim, hidden, num_classes, dropout)
    raise ValueError(f"unknown graph model {name!r}; choose one of {', '.join(MODEL_NAMES)}")
