"""Datasets and partitions for the federated side: torchvision files, flwr-datasets partitioners.

Images stay ``uint8`` in one tensor per process (cached), and a client turns only its own rows
into normalised floats, so 100 virtual clients cost one copy of the dataset per Ray worker, not
100. Partitions are computed with flwr-datasets partitioners (IID, Dirichlet, shards,
pathological) over a tiny in-memory ``datasets.Dataset`` of ``{"label", "idx"}``: no hub access,
and every process derives the same partition from the seed.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from fedticket.datasets import (  # noqa: F401  (re-exported for the fl modules)
    NUM_CLASSES,
    SPECS,
    input_shape,
    load_split,
    resolve_root,
    to_float,
)
from fedticket.errors import UserError

log = logging.getLogger("fedticket.fl")

def _subset(n: int, size: int | None, seed: int, salt: int) -> np.ndarray:
    idx = np.arange(n)
    if size is None or size >= n:
        return idx
    return np.sort(np.random.default_rng([seed, salt]).choice(n, size=size, replace=False))


def _partitioner(kind: str, num_clients: int, data_cfg, seed: int):
    from flwr_datasets import partitioner as P

    if kind == "iid":
        return P.IidPartitioner(num_partitions=num_clients)
    if kind == "dirichlet":
        return P.DirichletPartitioner(num_partitions=num_clients, partition_by="label",
                                      alpha=data_cfg.alpha, min_partition_size=data_cfg.min_partition_size,
                                      self_balancing=False, shuffle=True, seed=seed)
    if kind == "shards":
        return P.ShardPartitioner(num_partitions=num_clients, partition_by="label",
                                  num_shards_per_partition=data_cfg.shards_per_client,
                                  shuffle=True, seed=seed)
    return P.PathologicalPartitioner(num_partitions=num_clients, partition_by="label",
                                     num_classes_per_partition=data_cfg.classes_per_client,
                                     class_assignment_mode="random", shuffle=True, seed=seed)


@dataclass(frozen=True)
class ClientSplit:
    train: np.ndarray  # row indices into the training split
    val: np.ndarray


@lru_cache(maxsize=8)
def _partitioner_over(name: str, root: str, kind: str, num_clients: int, seed: int,
                      data_key: tuple):
    """The partitioner over the run's ``{"label", "idx"}`` table, built once per process.

    Partitions are cut from it one at a time, when a client needs its own: a worker that plays
    10 of 10,000 clients never materialises the other 9,990 (flwr-datasets' label-based
    partitioners keep only an index list per partition)."""
    import datasets

    from fedticket.fl.config import DataConfig

    data_cfg = DataConfig(**dict(data_key))
    _, labels = load_split(name, root, True)
    rows = _subset(len(labels), data_cfg.train_subset, seed, salt=1)
    # IidPartitioner cuts contiguous blocks: shuffle (seeded) first so blocks are random.
    rows = rows[np.random.default_rng([seed, 2]).permutation(len(rows))]
    table = datasets.Dataset.from_dict({"label": labels[rows].numpy(), "idx": rows})
    part = _partitioner(kind, num_clients, data_cfg, seed)
    part.dataset = table
    return part, len(rows), data_cfg


@lru_cache(maxsize=256)
def _partition(name: str, root: str, kind: str, num_clients: int, seed: int, data_key: tuple,
               pid: int) -> tuple[np.ndarray, np.ndarray]:
    part, n_rows, data_cfg = _partitioner_over(name, root, kind, num_clients, seed, data_key)
    try:
        with warnings.catch_warnings():  # pyarrow deprecation noise inside flwr-datasets
            warnings.simplefilter("ignore", FutureWarning)
            idx = np.asarray(part.load_partition(pid)["idx"], dtype=np.int64)
    except ValueError as e:
        raise UserError(f"partition={kind} cannot split {n_rows} examples over "
                        f"{num_clients} clients: {e}") from None
    rng = np.random.default_rng([seed, 3, pid])
    idx = idx[rng.permutation(len(idx))]
    n_val = int(round(len(idx) * data_cfg.val_fraction)) if len(idx) > 1 else 0
    n_val = min(max(n_val, 1 if len(idx) > 1 else 0), max(len(idx) - 1, 0))
    return np.sort(idx[n_val:]), np.sort(idx[:n_val])


def client_split(cfg, root: str, partition_id: int) -> ClientSplit:
    """The rows of client ``partition_id``: its local train and held-out validation split."""
    if not 0 <= partition_id < cfg.num_clients:
        raise ValueError(f"partition id {partition_id} out of range for {cfg.num_clients} clients")
    data_key = tuple(sorted(vars(cfg.data).items()))
    tr, va = _partition(cfg.data.name, str(root), cfg.data.partition, cfg.num_clients, cfg.seed,
                        data_key, partition_id)
    return ClientSplit(train=tr, val=va)


def client_tensors(cfg, root: str, partition_id: int):
    """(x_train, y_train, x_val, y_val) float/int64 tensors of one client."""
    images, labels = load_split(cfg.data.name, str(root), True)
    split = client_split(cfg, root, partition_id)
    tr = torch.from_numpy(split.train)
    va = torch.from_numpy(split.val)
    return (to_float(cfg.data.name, images[tr]), labels[tr],
            to_float(cfg.data.name, images[va]), labels[va])


def test_tensors(cfg, root: str):
    """The central test set (optionally a seeded subset) as float/int64 tensors."""
    images, labels = load_split(cfg.data.name, str(root), False)
    rows = torch.from_numpy(_subset(len(labels), cfg.data.test_subset, cfg.seed, salt=4))
    return to_float(cfg.data.name, images[rows]), labels[rows]
