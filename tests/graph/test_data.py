"""Planetoid loading: public split, read-only roots, PubMed when present."""

from __future__ import annotations

import pytest
import torch

import graph.data as gd
from fedticket.errors import UserError


def test_cora_public_split(cora):
    assert cora.num_nodes == 2708 and cora.edge_index.size(1) == 10556
    assert int(cora.train_mask.sum()) == 140 and int(cora.val_mask.sum()) == 500
    assert int(cora.test_mask.sum()) == 1000
    assert torch.allclose(cora.x.sum(1)[cora.x.sum(1) > 0], torch.ones(1))  # row-normalised


def test_read_only_root_is_copied_to_a_writable_cache(tmp_path, monkeypatch, planetoid_copy):
    root = planetoid_copy("Cora", tmp_path / "shared")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    dirs = [root / "Planetoid", root / "Planetoid" / "Cora", root / "Planetoid" / "Cora" / "raw"]
    for d in dirs:  # r-x, like the shared dataset folder (root ignores the bits; we must not)
        d.chmod(0o555)
    try:
        data = gd.load_planetoid("cora", root)
    finally:
        for d in dirs:
            d.chmod(0o755)
    assert data.num_nodes == 2708
    assert not (root / "Planetoid" / "Cora" / "processed").exists()  # nothing written there
    assert (tmp_path / "cache" / "fedticket" / "planetoid" / "Cora" / "processed").is_dir()


def test_unknown_dataset_name():
    with pytest.raises(UserError, match="did you mean 'citeseer'"):
        gd.load_planetoid("citeseeer", "/nonexistent")


def test_citeseer_when_present(tmp_path, planetoid_copy):
    root = planetoid_copy("CiteSeer", tmp_path)
    data = gd.load_planetoid("citeseer", root)
    assert data.num_nodes == 3327 and int(data.train_mask.sum()) == 120


def test_pubmed_when_present(tmp_path, planetoid_copy, shared_root):
    src = shared_root
    if src is None or not (src / "Planetoid" / "PubMed" / "raw").is_dir():
        pytest.skip("PubMed raw files are not available offline here; place "
                    + ", ".join(gd.raw_files("pubmed")) + " in <data>/Planetoid/PubMed/raw/")
    root = planetoid_copy("PubMed", tmp_path)
    data = gd.load_planetoid("pubmed", root)
    assert data.num_nodes == 19717 and int(data.train_mask.sum()) == 60
