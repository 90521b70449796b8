"""Mini-batch training over PyG's ``NeighborLoader``, for graphs past a full-batch memory budget.

Full-batch training (``graph.train``) holds every node's activations at once: about
``N x hidden x layers`` floats plus the edge list, which stops fitting somewhere past a few
million nodes. Here the graph is first sparsified (TEDDY or random, :mod:`graph.transforms`,
O(|E|)), then a GNN from :mod:`graph.models` is trained on neighbour-sampled subgraphs: each batch
is ``batch_size`` seed nodes plus at most ``num_neighbors[h]`` sampled in-neighbours per node at
hop ``h``. Because sampling runs on the *sparsified* ``edge_index``, a batch can only ever contain
kept edges. Evaluation is sampled inference: the same loader over the evaluated nodes, with
``eval_num_neighbors`` (``-1`` = every neighbour, which for these two-layer models sees each
evaluated node's whole two-hop neighbourhood; GCN's degree normalisation is then exact for the
node and its neighbours and approximate only at the two-hop boundary).

The sampler: PyG's own ``NeighborSampler`` needs ``pyg-lib`` or ``torch-sparse`` (compiled
extensions without wheels for every torch). When neither is installed, :class:`TorchNeighborSampler`
(the same class with its sampling step written in plain torch: uniform, without replacement,
directional) takes its place; ``NeighborLoader`` itself, batching and feature slicing, is PyG's.

    from graph.minibatch import fit_neighbor
    res = fit_neighbor(data, "gcn", sparsity=0.3, num_neighbors=(10, 10), epochs=20)
    res.test_accuracy
    # TEDDY past full batch: dense teacher, then distillation + ℓ0 weights on the sparse graph
    res = fit_neighbor(data, "gcn", sparsity=0.3, kd_lambda=10, l0_density=0.5, epochs=20)
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F
import torch_geometric.typing as pyg_typing
from torch import Tensor, nn
from torch_geometric.data import Data
from torch_geometric.loader import NeighborLoader
from torch_geometric.sampler import NeighborSampler, SamplerOutput

from fedticket.core import Mask, apply_mask, l0_project, prunable_parameters
from graph.models import build_model
from graph.transforms import RandomEdgeSparsify, TeddyEdgeSparsify

SPARSIFIERS = ("teddy", "random", "none")


class TorchNeighborSampler(NeighborSampler):
    """PyG's ``NeighborSampler`` with the homogeneous sampling step in plain torch.

    Uniform sampling without replacement of at most ``k`` in-neighbours per frontier node and hop
    (all of them for ``k = -1``), directional subgraph, no time, no weights, not disjoint: the
    defaults of ``NeighborLoader``. Randomness comes from torch's global generator (seed it).
    """

    def __init__(self, data: Data, num_neighbors, **kwargs):
        if any(kwargs.get(k) for k in ("replace", "disjoint", "time_attr", "weight_attr")):
            raise ValueError("TorchNeighborSampler samples uniformly without replacement; install "
                             "pyg-lib for replace/disjoint/temporal/weighted sampling")
        if not isinstance(data, Data):
            raise ValueError("TorchNeighborSampler serves homogeneous Data; install pyg-lib for "
                             "HeteroData sampling")
        with warnings.catch_warnings():  # "without pyg-lib is deprecated": we do not use it
            warnings.simplefilter("ignore")
            super().__init__(data, num_neighbors, **kwargs)
        self.num_nodes = int(data.num_nodes)

    def _sample(self, seed: Tensor, seed_time=None, **kwargs) -> SamplerOutput:
        colptr, src_of = self.colptr, self.row
        local = torch.full((self.num_nodes,), -1, dtype=torch.long)
        seed = seed.long()
        local[seed] = torch.arange(seed.numel())
        nodes, rows, cols, edges = [seed], [], [], []
        n_nodes, n_edges = [seed.numel()], []
        frontier, count = seed, seed.numel()
        for k in self.num_neighbors.get_mapped_values():
            start = colptr[frontier]
            deg = colptr[frontier + 1] - start
            seg = torch.repeat_interleave(torch.arange(frontier.numel()), deg)
            offs = torch.arange(seg.numel()) - torch.repeat_interleave(torch.cumsum(deg, 0) - deg,
                                                                       deg)
            pos = start[seg] + offs  # CSC positions of every in-edge of the frontier
            if k >= 0 and bool((deg > k).any()):
                # shuffle within each segment (seg + U(0,1) keeps segments contiguous and in
                # order), then keep the first k of each: a uniform k-subset per node
                order = torch.argsort(seg.double() + torch.rand(seg.numel(), dtype=torch.float64))
                sel = order[offs < k]
                pos, seg = pos[sel], seg[sel]
            src = src_of[pos]
            new = torch.unique(src[local[src] < 0])
            local[new] = torch.arange(count, count + new.numel())
            count += new.numel()
            rows.append(local[src])
            cols.append(local[frontier[seg]])
            edges.append(pos)
            nodes.append(new)
            n_nodes.append(new.numel())
            n_edges.append(pos.numel())
            frontier = new
        return SamplerOutput(node=torch.cat(nodes), row=torch.cat(rows), col=torch.cat(cols),
                             edge=torch.cat(edges), batch=None, num_sampled_nodes=n_nodes,
                             num_sampled_edges=n_edges)


def has_compiled_sampler() -> bool:
    return bool(pyg_typing.WITH_PYG_LIB or pyg_typing.WITH_TORCH_SPARSE)


def neighbor_loader(data: Data, num_neighbors: Sequence[int], *, batch_size: int = 512,
                    input_nodes: Tensor | None = None, shuffle: bool = False,
                    **kwargs) -> NeighborLoader:
    """PyG's ``NeighborLoader`` with PyG's sampler when it can run here, else ours."""
    nn_list = [int(k) for k in num_neighbors]
    if not nn_list or any(k == 0 or k < -1 for k in nn_list):
        raise ValueError(f"num_neighbors must be positive fanouts per hop (or -1 for all), "
                         f"got {list(num_neighbors)}")
    sampler = None if has_compiled_sampler() else TorchNeighborSampler(data, nn_list)
    return NeighborLoader(data, num_neighbors=nn_list, batch_size=int(batch_size),
                          input_nodes=input_nodes, shuffle=shuffle, neighbor_sampler=sampler,
                          **kwargs)


@torch.no_grad()
def sampled_inference(model: nn.Module, data: Data, nodes: Tensor,
                      num_neighbors: Sequence[int], batch_size: int = 1024) -> Tensor:
    """Eval-mode logits of ``nodes`` (in that order), each from its sampled neighbourhood."""
    model.eval()
    loader = neighbor_loader(data, num_neighbors, batch_size=batch_size, input_nodes=nodes)
    outs = [model(b.x, b.edge_index)[: b.batch_size] for b in loader]
    return torch.cat(outs) if outs else torch.zeros(0)


def _acc(logits: Tensor, y: Tensor) -> float:
    return float((logits.argmax(-1) == y).float().mean()) if y.numel() else float("nan")


@dataclass
class MiniBatchResult:
    val_accuracy: float
    test_accuracy: float
    best_epoch: int
    losses: list[float] = field(default_factory=list)  # mean training loss per epoch
    seconds: float = 0.0
    kept_edges: int = 0  # directed edges left after sparsification
    mask: Mask | None = None  # ℓ0 weight mask in force at the best epoch (None when dense)


def sparsify(data: Data, method: str, sparsity: float, seed: int = 0) -> Data:
    """The graph the loader samples from: TEDDY- or randomly sparsified (or as is)."""
    if method not in SPARSIFIERS:
        raise ValueError(f"unknown sparsifier {method!r}; choose one of {', '.join(SPARSIFIERS)}")
    if method == "none" or sparsity == 0:
        return data
    t = TeddyEdgeSparsify(sparsity) if method == "teddy" else RandomEdgeSparsify(sparsity, seed)
    return t(data)


def train_neighbor(model: nn.Module, data: Data, *, num_neighbors: Sequence[int] = (10, 10),
                   eval_num_neighbors: Sequence[int] | None = None, batch_size: int = 256,
                   epochs: int = 20, lr: float = 0.01, weight_decay: float = 5e-4,
                   l0_density: float | None = None, teacher_logits: Tensor | None = None,
                   kd_lambda: float = 0.0, temperature: float = 1.0, eval_every: int = 1,
                   progress: bool = False, step_callback=None) -> MiniBatchResult:
    """Train ``model`` in place on neighbour-sampled batches of ``data``; see the module docstring.

    ``data`` is used as given (sparsify it first, see :func:`sparsify`). Without a teacher the
    batches are seeded by the training nodes and the loss is cross-entropy. With
    ``teacher_logits`` (``[N, C]``, e.g. from :func:`sampled_inference` of a dense model) and
    ``kd_lambda > 0`` it is TEDDY's objective: the batches are seeded by *all* nodes, CE on the
    seeds that are training nodes plus ``kd_lambda`` · KL(teacher ‖ student) on every seed, so
    the distillation covers all nodes as in the full-batch loop. ``l0_density`` keeps the weights
    inside the ℓ0 ball after every step (core's ``l0_project``). The result is the test accuracy
    at the epoch of best validation accuracy (ties: the later epoch); ``step_callback(batch)``
    sees every training batch (tests use it).
    """
    from graph.train import distillation_loss

    use_kd = teacher_logits is not None and kd_lambda > 0
    if use_kd and teacher_logits.size(0) != data.num_nodes:
        raise ValueError(f"teacher_logits has {teacher_logits.size(0)} rows for "
                         f"{data.num_nodes} nodes; pass the logits of every node")
    eval_nn = list(eval_num_neighbors) if eval_num_neighbors is not None else \
        [-1] * len(num_neighbors)
    seeds = None if use_kd else data.train_mask.nonzero().view(-1)
    val_nodes, test_nodes = data.val_mask.nonzero().view(-1), data.test_mask.nonzero().view(-1)
    loader = neighbor_loader(data, num_neighbors, batch_size=batch_size, input_nodes=seeds,
                             shuffle=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    prunable = (prunable_parameters(model) if l0_density is not None and l0_density < 1.0
                else None)
    mask = None
    if prunable is not None:
        mask = l0_project(prunable, l0_density, "global")
        apply_mask(prunable, mask)
    best, res = (-1.0, -1), MiniBatchResult(float("nan"), float("nan"), -1)
    t0 = time.perf_counter()
    epochs_iter = range(epochs)
    if progress:
        from tqdm.auto import tqdm

        epochs_iter = tqdm(epochs_iter, desc="neighbor", unit="ep", leave=False)
    for epoch in epochs_iter:
        model.train()
        total, seen = 0.0, 0
        for batch in loader:
            if step_callback is not None:
                step_callback(batch)
            bs = batch.batch_size
            optimizer.zero_grad(set_to_none=True)
            out = model(batch.x, batch.edge_index)[:bs]
            train = batch.train_mask[:bs]
            loss = (F.cross_entropy(out[train], batch.y[:bs][train]) if bool(train.any())
                    else out.sum() * 0.0)
            if use_kd:
                teacher = teacher_logits[batch.n_id[:bs]]
                loss = loss + kd_lambda * distillation_loss(out, teacher, temperature)
            loss.backward()
            optimizer.step()
            if prunable is not None:
                mask = l0_project(prunable, l0_density, "global")
                apply_mask(prunable, mask)
            total += float(loss.detach()) * bs
            seen += bs
        res.losses.append(total / max(seen, 1))
        if (epoch + 1) % eval_every and epoch + 1 != epochs:
            continue
        val = _acc(sampled_inference(model, data, val_nodes, eval_nn), data.y[val_nodes])
        if (val, epoch) > best:
            best = (val, epoch)
            test = _acc(sampled_inference(model, data, test_nodes, eval_nn), data.y[test_nodes])
            res.val_accuracy, res.test_accuracy, res.best_epoch = val, test, epoch
            res.mask = mask.clone() if mask is not None else None
    res.seconds = time.perf_counter() - t0
    res.kept_edges = int(data.edge_index.size(1))
    return res


def fit_neighbor(data: Data, model: str = "gcn", *, sparsifier: str = "teddy",
                 sparsity: float = 0.0, hidden: int = 128, dropout: float = 0.5, seed: int = 0,
                 kd_lambda: float = 0.0, **train_kwargs) -> MiniBatchResult:
    """Sparsify ``data``, build a :mod:`graph.models` model and :func:`train_neighbor` it.

    With ``kd_lambda > 0`` this is TEDDY past full batch: a dense teacher is trained first on the
    whole graph (same seed, same settings, CE only), its logits of every node come from sampled
    inference, and the student on the sparsified graph distils them (add ``l0_density`` for the
    weight sparsity).
    """
    num_classes = int(data.y.max()) + 1
    teacher_logits = None
    if kd_lambda > 0:
        torch.manual_seed(seed)
        teacher = build_model(model, data.num_features, num_classes, hidden=hidden,
                              dropout=dropout)
        dense_kwargs = {k: v for k, v in train_kwargs.items()
                        if k not in ("l0_density", "step_callback")}
        train_neighbor(teacher, data, **dense_kwargs)
        eval_nn = train_kwargs.get("eval_num_neighbors") or \
            [-1] * len(train_kwargs.get("num_neighbors", (10, 10)))
        teacher_logits = sampled_inference(teacher, data, torch.arange(data.num_nodes), eval_nn)
    torch.manual_seed(seed)
    sparse = sparsify(data, sparsifier, sparsity, seed)
    net = build_model(model, data.num_features, num_classes, hidden=hidden, dropout=dropout)
    return train_neighbor(net, sparse, teacher_logits=teacher_logits, kd_lambda=kd_lambda,
                          **train_kwargs)


def full_batch_bytes(num_nodes: int, num_edges: int, in_dim: int, hidden: int,
                     layers: int = 2) -> int:
    """Rough float32 memory of one full-batch training step: features, ``layers`` activations
    kept for backward (x3 for ReLU/dropout/grad copies) and the edge list with its weights."""
    return 4 * num_nodes * (in_dim + 3 * layers * hidden) + 24 * num_edges


def choose_mode(data: Data, hidden: int, budget_bytes: int) -> str:
    """``"full"`` when a full-batch step fits ``budget_bytes``, else ``"neighbor"``."""
    need = full_batch_bytes(data.num_nodes, data.edge_index.size(1), data.num_features, hidden)
    return "full" if need <= budget_bytes else "neighbor"


def load_ogbn_arxiv(root) -> Data:
    """ogbn-arxiv (169k nodes, 1.17M edges made undirected: 2.3M) as a ``Data`` with masks.

    Needs the optional ``ogb`` package (``pip install 'fedticket[ogb]'``); the dataset downloads
    into ``<root>/ogbn_arxiv`` on first use (about 80 MB), so offline it must already be there.
    """
    from pathlib import Path

    from torch_geometric.utils import to_undirected

    from fedticket.errors import UserError

    try:
        from ogb.nodeproppred import PygNodePropPredDataset
    except ImportError as e:
        raise UserError("ogbn-arxiv needs the 'ogb' package: pip install 'fedticket[ogb]' "
                        f"(or pip install ogb) ({e})") from None
    root = Path(root).expanduser()
    try:
        ds = PygNodePropPredDataset(name="ogbn-arxiv", root=str(root))
    except Exception as e:  # URLError, OSError...: it tried to download
        raise UserError(f"ogbn-arxiv could not be loaded from {root / 'ogbn_arxiv'} nor "
                        f"downloaded ({type(e).__name__}: {e}); run once online, or copy the "
                        "ogbn_arxiv folder there") from None
    data = ds[0]
    split = ds.get_idx_split()
    n = data.num_nodes
    out = Data(x=data.x, y=data.y.view(-1), num_nodes=n,
               edge_index=to_undirected(data.edge_index, num_nodes=n))
    for name, key in (("train", "train"), ("val", "valid"), ("test", "test")):
        mask = torch.zeros(n, dtype=torch.bool)
        mask[split[key]] = True
        out[f"{name}_mask"] = mask
    out.name = "ogbn-arxiv"
    return out
