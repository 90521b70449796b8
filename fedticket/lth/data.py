"""Train / validation / test tensors for the lottery-ticket experiments.

The validation split is held out of the training split (a seeded permutation), so the early-stop
iteration is chosen without ever looking at the test set.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fedticket.datasets import canonical_name, input_shape, load_split, resolve_root, to_float
from fedticket.errors import ConfigError


@dataclass
class Splits:
    name: str
    shape: tuple[int, int, int]
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor

    def describe(self) -> str:
        return (f"{self.name}: {len(self.y_train)} train, {len(self.y_val)} validation, "
                f"{len(self.y_test)} test images of shape {self.shape}")


def load_splits(dataset: str, root=None, *, val_size: int = 5000, train_subset: int = 0,
                test_subset: int = 0, seed: int = 0, download: bool = True) -> Splits:
    """Normalised float splits; ``train_subset`` / ``test_subset`` > 0 keep only that many."""
    name = canonical_name(dataset)
    found = resolve_root(name, root, None, download)
    xi, yi = load_split(name, str(found), True)
    xt, yt = load_split(name, str(found), False)
    n = len(yi)
    if not 0 < val_size < n:
        raise ConfigError(f"val_size must be in (0, {n}) for {name}, got {val_size}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))
    val_idx, train_idx = perm[:val_size], perm[val_size:]
    if train_subset:
        if train_subset > len(train_idx):
            raise ConfigError(f"train_subset {train_subset} exceeds the {len(train_idx)} training "
                              "images left after the validation split; lower it (0 = all)")
        train_idx = train_idx[:train_subset]
    if test_subset:
        xt, yt = xt[:test_subset], yt[:test_subset]
    return Splits(name, input_shape(name), to_float(name, xi[train_idx]), yi[train_idx],
                  to_float(name, xi[val_idx]), yi[val_idx], to_float(name, xt), yt)
