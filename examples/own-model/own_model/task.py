"""The model and the data of this app: nothing here comes from fedticket.

``Net`` is a small CNN fedticket does not ship. The data are FashionMNIST's idx files read
directly from ``DATA_ROOT/FashionMNIST/raw/`` (plain or ``.gz``); without them, a synthetic
10-class problem generated from the seed (class prototypes + noise), so the app runs anywhere.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

INPUT_SHAPE = (1, 28, 28)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(32 * 7 * 7, 64), nn.ReLU(),
                                  nn.Linear(64, 10))

    def forward(self, x):
        return self.head(self.features(x))


def _idx(path: Path) -> np.ndarray:
    """An idx file (MNIST format) as an array; ``path`` or ``path.gz``."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _fashionmnist(root: Path, train: bool) -> tuple[torch.Tensor, torch.Tensor] | None:
    prefix = "train" if train else "t10k"
    raw = root / "FashionMNIST" / "raw"
    files = []
    for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"):
        p = raw / f"{prefix}-{kind}"
        p = p if p.is_file() else p.with_name(p.name + ".gz")
        if not p.is_file():
            return None
        files.append(p)
    images = torch.from_numpy(_idx(files[0]).copy()).float().div(255.0).sub(0.2860).div(0.3530)
    return images.unsqueeze(1), torch.from_numpy(_idx(files[1]).astype(np.int64))


def _synthetic(n: int, seed: int, salt: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1234)            # the same 10 prototypes everywhere
    prototypes = torch.randn(10, *INPUT_SHAPE, generator=g)
    g = torch.Generator().manual_seed(seed * 7919 + salt)
    y = torch.randint(0, 10, (n,), generator=g)
    return prototypes[y] + 1.5 * torch.randn(n, *INPUT_SHAPE, generator=g), y


def data_root(configured: str) -> Path | None:
    for cand in (configured, os.environ.get("FEDTICKET_DATA", "")):
        if cand and (Path(cand) / "FashionMNIST" / "raw").is_dir():
            return Path(cand)
    return None


def load_split(configured_root: str, train: bool, n: int, seed: int):
    """``n`` seeded examples of the train or test split (FashionMNIST, else synthetic)."""
    root = data_root(configured_root)
    data = _fashionmnist(root, train) if root is not None else None
    if data is None:
        return _synthetic(n, seed, salt=1 if train else 2)
    x, y = data
    rows = torch.from_numpy(np.random.default_rng([seed, int(train)]).permutation(len(y))[:n])
    return x[rows], y[rows]


def load_partition(configured_root: str, partition_id: int, num_partitions: int, n: int,
                   seed: int):
    """This node's IID share of the training examples: (x, y, x_val, y_val), 20% held out."""
    x, y = load_split(configured_root, True, n, seed)
    part = torch.arange(len(y))[partition_id::num_partitions]
    n_val = len(part) // 5
    return x[part[n_val:]], y[part[n_val:]], x[part[:n_val]], y[part[:n_val]]


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    return float((model(x).argmax(1) == y).float().mean())
