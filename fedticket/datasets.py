"""Where datasets live, and the vision datasets through torchvision: files, downloads, the
offline message.

The data root has one resolution rule for both sides (:func:`resolve_data_root`): explicit flag >
config value > ``$FEDTICKET_DATA`` > ``./data``.

Used by the federated side (partitions live in :mod:`fedticket.fl.dataset`) and by the CLI's
data-dependent scorers (SNIP, GraSP). Images are kept as one ``uint8`` tensor per process
(cached) and turned into normalised floats only where needed.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from fedticket.errors import UserError

ENV_VAR = "FEDTICKET_DATA"


def resolve_data_root(flag: str | os.PathLike | None = None,
                      config: str | os.PathLike | None = None) -> Path:
    """The data root: explicit flag > config value > ``$FEDTICKET_DATA`` > ``./data``."""
    for candidate in (flag, config, os.environ.get(ENV_VAR)):
        if candidate not in (None, ""):
            return Path(candidate).expanduser()
    return Path("data")


log = logging.getLogger("fedticket.data")

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
# the CLI contract spells it with a dash (`--dataset fashion-mnist`)
ALIASES = {"fashion-mnist": "fashionmnist", "cifar-10": "cifar10"}


def canonical_name(name: str) -> str:
    name = ALIASES.get(name, name)
    if name not in SPECS:
        raise UserError(f"unknown dataset {name!r}; choose one of {', '.join(SPECS)} "
                        "(fashion-mnist is accepted for fashionmnist)")
    return name


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

    The root is ``--data-root`` > config ``data.root`` > ``$FEDTICKET_DATA`` > ``./data``
    (:func:`resolve_data_root`); files already there are used in place (a read-only
    folder is fine), otherwise torchvision downloads into it.
    """
    name = canonical_name(name)
    primary = resolve_data_root(flag, config_root).expanduser().resolve()
    candidates = [primary]
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


def load_vision_dataset(name: str, root: str | Path | None = None, train: bool = True,
                        download: bool = True):
    """A ``TensorDataset`` of normalised float images and labels (finds or downloads the files)."""
    name = canonical_name(name)
    found = resolve_root(name, root, None, download)
    images, labels = load_split(name, str(found), train)
    return torch.utils.data.TensorDataset(to_float(name, images), labels)
