"""Data-parallel mini-batch training on CPU: ``torch.distributed`` (gloo) + DistributedDataParallel.

Each of ``world_size`` processes holds the whole (sparsified) graph and a replica of the model,
and trains on its own share of the training nodes over neighbour-sampled batches
(:mod:`graph.minibatch`); DDP all-reduces (averages) the gradients after every backward, so every
replica takes the same optimizer step and the parameters stay identical. Details that keep it so:

* the training nodes are permuted once with ``seed`` (the same permutation on every rank) and
  rank ``r`` takes every ``world_size``-th node from position ``r``, cut to a common length, so
  the shares are disjoint and every rank runs the same number of batches (DDP needs each rank to
  join every all-reduce; an extra batch on one rank would hang the others);
* the model is built from ``seed`` on every rank (DDP also broadcasts rank 0's weights at wrap
  time); each rank's sampling and shuffling use ``seed + rank``, so ranks see different batches;
* the ℓ0 projection, when asked for, runs after the synchronised step on identical weights, so it
  picks identical masks.

Launch from Python (spawns the processes, gathers their results)::

    from graph.distributed import launch
    results = launch(data, world_size=2, model="gcn", sparsity=0.3, epochs=5)

Processes meet over TCP on ``127.0.0.1`` at a free port (or ``port``). Under ``torchrun`` call
:func:`train_rank` yourself with ``dist.init_process_group("gloo")`` already done.
"""

from __future__ import annotations

import json
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch_geometric.data import Data

from fedticket.core import apply_mask, l0_project, prunable_parameters
from graph.minibatch import _acc, neighbor_loader, sampled_inference, sparsify
from graph.models import build_model


@dataclass
class RankResult:
    rank: int
    losses: list[float]  # per epoch, averaged over all ranks (identical on every rank)
    train_nodes: list[int]  # this rank's share of the training nodes
    state: dict[str, torch.Tensor]  # final parameters
    val_accuracy: float | None = None  # rank 0 only: sampled inference at the end
    test_accuracy: float | None = None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rank_share(train_nodes: torch.Tensor, rank: int, world_size: int, seed: int) -> torch.Tensor:
    """This rank's disjoint, equally long share of the training nodes."""
    gen = torch.Generator().manual_seed(int(seed))
    perm = train_nodes[torch.randperm(train_nodes.numel(), generator=gen)]
    per = perm.numel() // world_size
    if per == 0:
        raise ValueError(f"{train_nodes.numel()} training nodes cannot be shared by "
                         f"{world_size} processes; use fewer processes")
    return perm[rank::world_size][:per]


def train_rank(rank: int, world_size: int, data: Data, *, model: str = "gcn", hidden: int = 128,
               dropout: float = 0.5, sparsifier: str = "teddy", sparsity: float = 0.0,
               num_neighbors=(10, 10), eval_num_neighbors=None, batch_size: int = 256,
               epochs: int = 10, lr: float = 0.01, weight_decay: float = 5e-4,
               l0_density: float | None = None, seed: int = 0) -> RankResult:
    """One process's part; the process group must already be initialised."""
    torch.manual_seed(seed)
    graph = sparsify(data, sparsifier, sparsity, seed)
    net = build_model(model, data.num_features, int(data.y.max()) + 1, hidden=hidden,
                      dropout=dropout)
    ddp = DistributedDataParallel(net)
    share = rank_share(data.train_mask.nonzero().view(-1), rank, world_size, seed)
    torch.manual_seed(seed + 1 + rank)  # batches and dropout differ per rank
    loader = neighbor_loader(graph, num_neighbors, batch_size=batch_size, input_nodes=share,
                             shuffle=True)
    optimizer = torch.optim.Adam(ddp.parameters(), lr=lr, weight_decay=weight_decay)
    prunable = prunable_parameters(net) if l0_density is not None and l0_density < 1 else None
    if prunable is not None:
        apply_mask(prunable, l0_project(prunable, l0_density, "global"))
    losses = []
    for _ in range(epochs):
        ddp.train()
        total = torch.zeros(2, dtype=torch.float64)
        for batch in loader:
            optimizer.zero_grad(set_to_none=True)
            out = ddp(batch.x, batch.edge_index)[: batch.batch_size]
            loss = F.cross_entropy(out, batch.y[: batch.batch_size])
            loss.backward()
            optimizer.step()
            if prunable is not None:
                apply_mask(prunable, l0_project(prunable, l0_density, "global"))
            total += torch.tensor([float(loss.detach()) * batch.batch_size, batch.batch_size],
                                  dtype=torch.float64)
        dist.all_reduce(total)
        losses.append(float(total[0] / total[1]))
    res = RankResult(rank, losses, share.tolist(),
                     {k: v.detach().clone() for k, v in net.state_dict().items()})
    if rank == 0:
        eval_nn = list(eval_num_neighbors or [-1] * len(num_neighbors))
        val, test = data.val_mask.nonzero().view(-1), data.test_mask.nonzero().view(-1)
        res.val_accuracy = _acc(sampled_inference(net, graph, val, eval_nn), data.y[val])
        res.test_accuracy = _acc(sampled_inference(net, graph, test, eval_nn), data.y[test])
    return res


def _worker(rank: int, world_size: int, port: int, out_dir: str, data: Data, kwargs: dict):
    from safetensors.torch import save_file

    torch.set_num_threads(1)  # one core per process: they run side by side
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world_size)
    try:
        res = train_rank(rank, world_size, data, **kwargs)
        out = Path(out_dir)
        save_file({k: v.contiguous() for k, v in res.state.items()}, str(out / f"rank{rank}.st"))
        meta = {"losses": res.losses, "train_nodes": res.train_nodes,
                "val_accuracy": res.val_accuracy, "test_accuracy": res.test_accuracy}
        (out / f"rank{rank}.json").write_text(json.dumps(meta))
        dist.barrier()
    finally:
        dist.destroy_process_group()


def launch(data: Data, world_size: int = 2, *, port: int | None = None,
           **kwargs) -> list[RankResult]:
    """Spawn ``world_size`` gloo processes on 127.0.0.1, train, return every rank's result.

    ``kwargs`` go to :func:`train_rank`. Results travel back through a temporary folder
    (safetensors for the weights, JSON for the rest; nothing is unpickled).
    """
    import torch.multiprocessing as mp
    from safetensors.torch import load_file

    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    with tempfile.TemporaryDirectory(prefix="fedticket-ddp-") as tmp:
        mp.spawn(_worker, args=(world_size, port or free_port(), tmp, data, kwargs),
                 nprocs=world_size, join=True)
        out = []
        for r in range(world_size):
            meta = json.loads((Path(tmp) / f"rank{r}.json").read_text())
            out.append(RankResult(r, meta["losses"], meta["train_nodes"],
                                  load_file(str(Path(tmp) / f"rank{r}.st")),
                                  meta["val_accuracy"], meta["test_accuracy"]))
    return out
