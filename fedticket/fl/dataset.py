"""Datasets and partitions for the federated side: torchvision files, flwr-datasets partitioners.

Images stay ``uint8`` in one tensor per process (cached), and a client turns only its own rows
into normalised floats, so 100 virtual clients cost one copy of the dataset per Ray worker, not
100. Partitions are computed with flwr-datasets partitioners (IID, Dirichlet, shards,
pathological) over a tiny in-memory ``datasets.Dataset`` of ``{"label", "idx"}``: no hub access,
and every process derives the same partition from the seed.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from fedticket.data import ENV_VAR, resolve_data_root
from fedticket.errors import UserError

log = logging.getLogger("fedticket.fl")

#: name -> torchvision class name, folder under the root, files that must exist, (C,H,W), mean, std
SPECS = {
    "fashionmnist": dict(cls="FashionMNIST", folder="FashionMNIST/raw", shape=(1, 28, 28),
                         files=("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
                         mean=(0.2860,), std=(0.3530,)),
    "mnist": dict(cls="MNIST", folder="MNIST/raw", shape=(1, 28, 28),
                  files=("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                         "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
                  mean=(0.1307,), std=(0.3081,)),
    "cifar10": dict(cls="CIFAR10", folder="cifar-10-batches-py", shape=(3, 32, 32),
                    files=("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4",
                           "data_batch_5", "test_batch", "batches.meta"),
                    mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616)),
}
NUM_CLASSES = 10
REPO_ROOT = Path(__file__).resolve().parents[2]


def input_shape(name: str) -> tuple[int, int, int]:
    return tuple(SPECS[name]["shape"])


def _present(name: str, root: Path) -> bool:
    spec = SPECS[name]
    folder = root / spec["folder"]
    # torchvision's MNIST family also accepts the .gz archives and extracts them itself
    return all((folder / f).is_file() or (folder / (f + ".gz")).is_file() for f in spec["files"])


def resolve_root(name: str, flag: str | os.PathLike | None = None,
                 config_root: str | os.PathLike | None = None, download: bool = True) -> Path:
    """Find (or download) ``name`` and return its absolute root; UserError says what to put where.

    Search order: ``--data-root`` > config ``data.root`` > ``$FEDTICKET_DATA`` > ``./data``; when
    none of them was given explicitly, ``../shared/data`` beside the repository is tried too (the
    offline copy of this workspace). A download is attempted into the first root only.
    """
    primary = resolve_data_root(flag, config_root).expanduser().resolve()
    explicit = any(v not in (None, "") for v in (flag, config_root, os.environ.get(ENV_VAR)))
    candidates = [primary]
    if not explicit:  # the workspace's offline copy, beside the repo (or beside the cwd: flwr run)
        for base in (REPO_ROOT, Path.cwd()):
            shared = (base.parent / "shared" / "data").resolve()
            if shared not in candidates:
                candidates.append(shared)
    for root in candidates:
        if _present(name, root):
            return root
    spec = SPECS[name]
    if download:
        try:
            _torchvision_dataset(name, primary, train=True, download=True)
            _torchvision_dataset(name, primary, train=False, download=True)
            if _present(name, primary):
                return primary
        except Exception as e:  # offline: URLError, socket errors, checksum failures
            log.debug("download of %s failed: %s", name, e)
    where = primary / spec["folder"]
    files = ", ".join(spec["files"])
    tried = " or ".join(str(c) for c in candidates)
    raise UserError(
        f"{spec['cls']} data not found under {tried}"
        + (" and the download failed (offline?)" if download else " (data.download is false)")
        + f". Place the files {files} in {where}/ (torchvision layout), or point --data-root / "
        f"data.root / ${ENV_VAR} at a folder that holds {spec['folder']}/.")


def _torchvision_dataset(name: str, root: Path, train: bool, download: bool = False):
    import torchvision

    cls = getattr(torchvision.datasets, SPECS[name]["cls"])
    # torchvision prints download progress on stdout; keep the run's own output clean.
    with contextlib.redirect_stdout(io.StringIO()):
        # CIFAR-10's batches are Python pickles: torchvision verifies their md5 against the
        # official release before it unpickles them, so only the genuine files are ever loaded.
        return cls(root=str(root), train=train, download=download)


@lru_cache(maxsize=8)
def load_split(name: str, root: str, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(uint8 images N×C×H×W, int64 labels N) of one split, cached per process."""
    ds = _torchvision_dataset(name, Path(root), train=train, download=False)
    data = ds.data
    if isinstance(data, np.ndarray):  # CIFAR: N×H×W×C numpy
        images = torch.from_numpy(data).permute(0, 3, 1, 2).contiguous()
    else:  # MNIST family: N×H×W tensor
        images = data.unsqueeze(1).contiguous()
    labels = torch.as_tensor(np.asarray(ds.targets), dtype=torch.int64)
    return images, labels


def to_float(name: str, images: torch.Tensor) -> torch.Tensor:
    """uint8 images -> normalised float32 (per-channel mean/std of the training set)."""
    spec = SPECS[name]
    x = images.float().div_(255.0)
    mean = torch.tensor(spec["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(spec["std"]).view(1, -1, 1, 1)
    return (x - mean) / std


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
def _partitions(name: str, root: str, kind: str, num_clients: int, seed: int,
                data_key: tuple) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
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
    out = []
    for pid in range(num_clients):
        try:
            with warnings.catch_warnings():  # pyarrow deprecation noise inside flwr-datasets
                warnings.simplefilter("ignore", FutureWarning)
                idx = np.asarray(part.load_partition(pid)["idx"], dtype=np.int64)
        except ValueError as e:
            raise UserError(f"partition={kind} cannot split {len(rows)} examples over "
                            f"{num_clients} clients: {e}") from None
        rng = np.random.default_rng([seed, 3, pid])
        idx = idx[rng.permutation(len(idx))]
        n_val = int(round(len(idx) * data_cfg.val_fraction)) if len(idx) > 1 else 0
        n_val = min(max(n_val, 1 if len(idx) > 1 else 0), max(len(idx) - 1, 0))
        out.append((np.sort(idx[n_val:]), np.sort(idx[:n_val])))
    return tuple(out)


def client_split(cfg, root: str, partition_id: int) -> ClientSplit:
    """The rows of client ``partition_id``: its local train and held-out validation split."""
    data_key = tuple(sorted(vars(cfg.data).items()))
    parts = _partitions(cfg.data.name, str(root), cfg.data.partition, cfg.num_clients, cfg.seed,
                        data_key)
    if not 0 <= partition_id < len(parts):
        raise ValueError(f"partition id {partition_id} out of range for {len(parts)} clients")
    tr, va = parts[partition_id]
    return ClientSplit(train=tr, val=va)


def partition_sizes(cfg, root: str) -> list[int]:
    return [len(client_split(cfg, root, p).train) for p in range(cfg.num_clients)]


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
