"""Vision datasets through torchvision, with one clear error when the files are not there.

Both the CLI's data-dependent scorers (SNIP, GraSP) and the federated side load data here, so the
offline message (which files, which folder) is written once.
"""

from __future__ import annotations

from pathlib import Path

from fedticket.errors import UserError

# name -> (torchvision class name, input shape, classes, normalisation mean, std, raw files)
VISION_DATASETS = {
    "fashion-mnist": ("FashionMNIST", (1, 28, 28), 10, (0.2860,), (0.3530,),
                      ["train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                       "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]),
    "mnist": ("MNIST", (1, 28, 28), 10, (0.1307,), (0.3081,),
              ["train-images-idx3-ubyte", "train-labels-idx1-ubyte",
               "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]),
    "cifar10": ("CIFAR10", (3, 32, 32), 10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616),
                ["cifar-10-batches-py/data_batch_1", "cifar-10-batches-py/test_batch"]),
}


# the federated configs spell names without the dash (torchvision's class names, lower-cased)
ALIASES = {"fashionmnist": "fashion-mnist", "cifar-10": "cifar10"}


def dataset_info(name: str) -> dict:
    name = ALIASES.get(name, name)
    if name not in VISION_DATASETS:
        raise UserError(f"unknown dataset {name!r}; choose one of {', '.join(VISION_DATASETS)}")
    cls, shape, classes, mean, std, files = VISION_DATASETS[name]
    return {"class": cls, "input_shape": shape, "num_classes": classes, "mean": mean, "std": std,
            "files": files}


def load_vision_dataset(name: str, root: str | Path, train: bool = True, download: bool = True):
    """A torchvision dataset with ``ToTensor`` + per-dataset normalisation.

    Tries the files under ``root`` first, then a download; when both fail (offline, read-only
    root) raises a UserError that names the exact files and folder to provide.
    """
    import torchvision
    from torchvision import transforms

    info = dataset_info(name)
    name = ALIASES.get(name, name)
    root = Path(root)
    cls = getattr(torchvision.datasets, info["class"])
    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize(info["mean"], info["std"])])
    try:
        return cls(str(root), train=train, download=False, transform=tf)
    except RuntimeError:
        pass
    if download:
        try:
            return cls(str(root), train=train, download=True, transform=tf)
        except Exception as e:  # network or permission failure: turn into a placement hint
            reason = f"{type(e).__name__}: {e}"
    else:
        reason = "download disabled"
    folder = root / (info["class"] + "/raw" if info["class"] != "CIFAR10" else "")
    files = ", ".join(info["files"])
    raise UserError(
        f"dataset {name!r} not found under {root} and could not be downloaded ({reason}). "
        f"Place {files} in {folder}, or point --data-root / $FEDTICKET_DATA at a folder that has them")
