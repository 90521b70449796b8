"""Planetoid citation graphs (Cora, CiteSeer, PubMed) with the public split, offline-friendly.

Layout (PyG's): ``<data_root>/Planetoid/<Name>/raw/ind.<name>.{x,tx,allx,y,ty,ally,graph,test.index}``.
PyG writes ``processed/`` next to ``raw/``; when the data root is read-only (a shared dataset
folder) we copy the eight raw files into a writable cache and process there, so the shared folder
is never written. Missing files while offline give one :class:`UserError` that lists the files and
where to put them.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import torch
from torch_geometric.data import Data

from fedticket.errors import UserError

DATASETS = {"cora": "Cora", "citeseer": "CiteSeer", "pubmed": "PubMed"}
RAW_SUFFIXES = ("x", "tx", "allx", "y", "ty", "ally", "graph", "test.index")
RAW_URL = "https://github.com/kimiyoung/planetoid/raw/master/data"


def canonical_name(name: str) -> str:
    key = str(name).lower()
    if key not in DATASETS:
        import difflib

        hint = difflib.get_close_matches(key, list(DATASETS), n=1)
        extra = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise UserError(f"unknown dataset {name!r}{extra}; the graph side supports "
                        f"{', '.join(DATASETS)} (PyG Planetoid, public split)")
    return DATASETS[key]


def raw_files(name: str) -> list[str]:
    lower = canonical_name(name).lower()
    return [f"ind.{lower}.{s}" for s in RAW_SUFFIXES]


def _writable(path: Path) -> bool:
    """Whether we may create ``processed/`` under ``path`` (or its nearest existing parent).

    Checks the permission *bits* as well as ``os.access``: root passes ``os.access`` on a
    ``r-x`` folder, but a folder marked read-only (a shared dataset) must not be written even then.
    """
    probe = path
    while not probe.exists():
        probe = probe.parent
    return os.access(probe, os.W_OK) and bool(probe.stat().st_mode & 0o222)


def _cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    root = Path(base) / "fedticket" / "planetoid"
    try:
        root.mkdir(parents=True, exist_ok=True)
        if os.access(root, os.W_OK):
            return root
    except OSError:
        pass
    return Path(tempfile.gettempdir()) / "fedticket-planetoid"


def _missing_message(name: str, raw_dir: Path, cause: BaseException | None) -> str:
    files = raw_files(name)
    why = f" ({type(cause).__name__}: {cause})" if cause else ""
    return (f"{canonical_name(name)} is not available under {raw_dir} and could not be downloaded{why}. "
            f"Place these {len(files)} files in {raw_dir}: {', '.join(files)} "
            f"(from {RAW_URL}/), or pass --data-root / set FEDTICKET_DATA to a folder that has "
            f"Planetoid/{canonical_name(name)}/raw/")


def load_planetoid(name: str, root: str | os.PathLike, normalize_features: bool = True) -> Data:
    """The single graph of a Planetoid dataset, public split, features row-normalised by default.

    ``root`` is the data root (the folder that holds ``Planetoid/``). Raises :class:`UserError`
    for an unknown name or missing files offline.
    """
    import torch_geometric.transforms as T
    from torch_geometric.datasets import Planetoid

    pyg_name = canonical_name(name)
    root = Path(root).expanduser()
    base = root / "Planetoid"
    raw_dir = base / pyg_name / "raw"
    have_raw = all((raw_dir / f).is_file() for f in raw_files(name))
    processed = base / pyg_name / "processed"
    have_processed = processed.is_dir() and any(processed.glob("data*.pt"))
    if not _writable(base / pyg_name) and not have_processed:
        if not have_raw:
            raise UserError(_missing_message(name, raw_dir, PermissionError(
                f"{base} is read-only, so nothing can be downloaded there")))
        cache = _cache_root()
        dst = cache / pyg_name / "raw"
        dst.mkdir(parents=True, exist_ok=True)
        for f in raw_files(name):
            if not (dst / f).is_file() or (dst / f).stat().st_size != (raw_dir / f).stat().st_size:
                shutil.copyfile(raw_dir / f, dst / f)
        base = cache
    transform = T.NormalizeFeatures() if normalize_features else None
    try:
        ds = Planetoid(str(base), pyg_name, split="public", transform=transform)
    except UserError:
        raise
    except Exception as e:  # URLError, HTTPError, OSError, ...: PyG tried to download
        raise UserError(_missing_message(name, raw_dir, e)) from None
    data = ds[0]
    data.name = pyg_name
    return data


def describe(data: Data) -> str:
    return (f"{getattr(data, 'name', 'graph')}: {data.num_nodes} nodes, "
            f"{data.num_edges // 2} undirected edges, {data.num_features} features, "
            f"{int(data.y.max()) + 1} classes, train/val/test = {int(data.train_mask.sum())}/"
            f"{int(data.val_mask.sum())}/{int(data.test_mask.sum())}")


def num_classes(data: Data) -> int:
    return int(torch.as_tensor(data.y).max()) + 1
