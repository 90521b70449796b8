"""Shared fixtures: a tiny FashionMNIST config and the data root (skip when the data is absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def find_data_root() -> Path | None:
    """$FEDTICKET_DATA, else ../shared/data beside the repo; None when FashionMNIST is not there."""
    for cand in (os.environ.get("FEDTICKET_DATA"), REPO.parent / "shared" / "data"):
        if cand and (Path(cand) / "FashionMNIST" / "raw" / "train-images-idx3-ubyte").is_file():
            return Path(cand).resolve()
    return None


@pytest.fixture(scope="session")
def data_root() -> Path:
    root = find_data_root()
    if root is None:
        pytest.skip("FashionMNIST not found: set FEDTICKET_DATA to a folder holding "
                    "FashionMNIST/raw/ (or place it in ../shared/data beside the repo)")
    return root


@pytest.fixture
def tiny(data_root, tmp_path):
    """Factory: a small, fast, validated FLConfig (4 clients, 800 examples, LeNet-300-100)."""
    from fedticket.fl.run import prepare

    def make(*overrides: str):
        base = ["num_clients=4", "clients_per_round=3", "rounds=2", "data.train_subset=800",
                "data.test_subset=500", "model.prune_iterations=5", "train.max_steps=5",
                f"output_dir={tmp_path / 'run'}", "data.download=false"]
        return prepare(None, base + list(overrides), data_root=str(data_root))

    return make
