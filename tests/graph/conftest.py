"""Shared fixtures for the graph tests: tiny synthetic graphs and a private copy of Cora."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch
from torch_geometric.data import Data
from torch_geometric.utils import to_undirected

REPO = Path(__file__).resolve().parents[2]


def shared_data_root() -> Path | None:
    """$FEDTICKET_DATA, else ../shared/data relative to the repository root."""
    for cand in (os.environ.get("FEDTICKET_DATA"), REPO.parent / "shared" / "data"):
        if cand and (Path(cand) / "Planetoid").is_dir():
            return Path(cand)
    return None


def copy_planetoid(name: str, dst_root: Path) -> Path:
    """Copy Planetoid/<Name>/raw into ``dst_root`` (tests never write into the shared folder)."""
    src = shared_data_root()
    raw = src / "Planetoid" / name / "raw" if src else None
    if raw is None or not raw.is_dir():
        pytest.skip(f"Planetoid {name} raw files not found: set FEDTICKET_DATA to a folder with "
                    f"Planetoid/{name}/raw/ (looked in $FEDTICKET_DATA and {REPO.parent / 'shared/data'})")
    dst = dst_root / "Planetoid" / name / "raw"
    shutil.copytree(raw, dst)
    return dst_root


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Every graph test on one thread (tests/conftest.py)."""


@pytest.fixture(scope="session")
def cora_root(tmp_path_factory) -> Path:
    return copy_planetoid("Cora", tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="session")
def cora(cora_root):
    from graph.data import load_planetoid

    return load_planetoid("cora", cora_root)


def make_graph(num_nodes: int = 60, num_classes: int = 3, num_features: int = 20, p_in: float = 0.15,
               p_out: float = 0.01, seed: int = 0) -> Data:
    """A small stochastic-block graph whose features hint at the class, with train/val/test masks."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(num_nodes) % num_classes
    same = y.view(-1, 1) == y.view(1, -1)
    prob = torch.where(same, torch.tensor(p_in), torch.tensor(p_out))
    upper = torch.triu(torch.rand(num_nodes, num_nodes, generator=g) < prob, diagonal=1)
    edge_index = to_undirected(upper.nonzero().t().contiguous(), num_nodes=num_nodes)
    x = torch.rand(num_nodes, num_features, generator=g) * 0.5
    x[torch.arange(num_nodes), y] += 1.0
    idx = torch.randperm(num_nodes, generator=g)
    masks = [torch.zeros(num_nodes, dtype=torch.bool) for _ in range(3)]
    n_tr, n_va = num_nodes // 3, num_nodes // 3
    masks[0][idx[:n_tr]] = True
    masks[1][idx[n_tr:n_tr + n_va]] = True
    masks[2][idx[n_tr + n_va:]] = True
    return Data(x=x, edge_index=edge_index, y=y, train_mask=masks[0], val_mask=masks[1],
                test_mask=masks[2])


@pytest.fixture
def graph_factory():
    """``make_graph`` as a fixture (test modules here are not a package, to keep the name
    ``graph`` free for the real package)."""
    return make_graph


@pytest.fixture
def planetoid_copy():
    """``copy_planetoid(name, dst_root)`` as a fixture (skips when the raw files are absent)."""
    return copy_planetoid


@pytest.fixture
def shared_root():
    return shared_data_root()
