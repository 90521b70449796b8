"""Planetoid loading: public split, read-only roots, raw files verified before reading, PubMed when present."""

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


def test_read_only_root_is_read_and_never_written(tmp_path, planetoid_copy):
    root = planetoid_copy("Cora", tmp_path / "shared")
    dirs = [root / "Planetoid", root / "Planetoid" / "Cora", root / "Planetoid" / "Cora" / "raw"]
    for d in dirs:  # r-x, like the shared dataset folder
        d.chmod(0o555)
    try:
        data = gd.load_planetoid("cora", root)
    finally:
        for d in dirs:
            d.chmod(0o755)
    assert data.num_nodes == 2708
    assert sorted(p.name for p in (root / "Planetoid" / "Cora").iterdir()) == ["raw"]  # no processed/


class _Payload:
    """Unpickling this creates ``path``: proof that code from the file ran."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.parametrize("same_size", [False, True])
def test_planted_pickle_is_refused_before_it_runs(tmp_path, planetoid_copy, same_size):
    import pickle

    root = planetoid_copy("Cora", tmp_path / "data")
    marker = tmp_path / "payload-ran"
    blob = pickle.dumps(_Payload(marker))
    target = root / "Planetoid" / "Cora" / "raw" / "ind.cora.x"
    if same_size:  # pickle stops at STOP: padding keeps it loadable and matches the size check
        blob += b"\0" * (gd.RAW_SHA256["ind.cora.x"][0] - len(blob))
    target.write_bytes(blob)
    with pytest.raises(UserError, match="ind.cora.x") as e:
        gd.load_planetoid("cora", root)
    assert "refusing" in str(e.value) and "delete it" in str(e.value)
    assert ("SHA-256" in str(e.value)) == same_size
    assert not marker.exists()
    pickle.loads(blob).close()  # the payload is live: unpickled, it does run
    assert marker.exists()


def test_every_raw_file_has_a_published_hash():
    for name in gd.DATASETS:
        for f in gd.raw_files(name):
            assert f in gd.RAW_SHA256 or f in gd.RAW_GIT_BLOB_SHA1, f


def test_shared_files_match_the_published_hashes(tmp_path, planetoid_copy):
    for name in ("Cora", "CiteSeer"):
        root = planetoid_copy(name, tmp_path / name)
        gd.verify_raw(name, root / "Planetoid" / name / "raw")  # raises on any mismatch


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
