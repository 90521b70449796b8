"""End to end: `graph run` on Cora for two levels, all methods, every output checked."""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shutil
from pathlib import Path

import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[2]


def _cora_copy(tmp_path: Path) -> Path:
    for cand in (os.environ.get("FEDTICKET_DATA"), REPO.parent / "shared" / "data"):
        if cand and (Path(cand) / "Planetoid" / "Cora" / "raw").is_dir():
            dst = tmp_path / "data" / "Planetoid" / "Cora" / "raw"
            shutil.copytree(Path(cand) / "Planetoid" / "Cora" / "raw", dst)
            return tmp_path / "data"
    pytest.skip("Cora raw files not found: set FEDTICKET_DATA to a folder with Planetoid/Cora/raw/")


@pytest.mark.slow
def test_graph_run_cora_two_levels(tmp_path):
    from fedticket.core import Mask
    from graph.run import main

    data_root = _cora_copy(tmp_path)
    out = tmp_path / "run"
    args = argparse.Namespace(
        config=str(REPO / "configs/graph/quickstart.yaml"),
        set=["methods=[teddy,ugs,random]", "train.epochs=40", "ugs.mask_epochs=15"],
        out=str(out), levels="1,3", data_root=str(data_root), quiet=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small shared CI machines: one thread is the fastest
    try:
        assert main(args) == 0
    finally:
        torch.set_num_threads(threads)

    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["sweep"]["levels"] == [1, 3] and cfg["train"]["epochs"] == 40
    assert cfg["methods"] == ["teddy", "ugs", "random"]

    with open(out / "levels.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    need = {"method", "level", "graph_sparsity", "weight_sparsity", "val_accuracy", "test_accuracy",
            "seconds"}
    assert need <= set(rows[0])
    got = {(r["method"], int(r["level"])) for r in rows}
    assert got == {("dense", 0), ("teddy", 1), ("teddy", 3), ("ugs", 1), ("ugs", 3),
                   ("random", 1), ("random", 3)}
    for r in rows:
        if r["method"] == "dense":
            continue
        k = int(r["level"])
        assert float(r["graph_sparsity"]) == pytest.approx(1 - 0.95 ** k)
        assert float(r["weight_sparsity"]) == pytest.approx(1 - 0.8 ** k)
        # exact counts, identical for every method at a level
        assert int(r["edges_kept"]) == 5278 - int(5278 * (1 - 0.95 ** k) + 0.5)
        assert int(r["weights_kept"]) == 737280 - math.ceil(737280 * float(r["weight_sparsity"]))
        assert 0.0 <= float(r["test_accuracy"]) <= 1.0 and float(r["seconds"]) > 0
    dense = [r for r in rows if r["method"] == "dense"][0]
    assert float(dense["test_accuracy"]) > 0.7  # even 40 epochs of GCN on Cora clear 70%
    teddy1 = [r for r in rows if r["method"] == "teddy" and r["level"] == "1"][0]
    assert float(teddy1["test_accuracy"]) > 0.7

    summary = json.loads((out / "summary.json").read_text())
    assert summary["dataset"] == "Cora" and summary["model"] == "gcn"
    assert summary["dense_test_accuracy"] == pytest.approx(float(dense["test_accuracy"]))
    assert len(summary["levels"]) == 7
    for e in summary["levels"]:
        assert need <= set(e)

    for png in ("test_acc_vs_graph_sparsity.png", "test_acc_vs_weight_sparsity.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # the saved TEDDY mask is a core Mask with the reported number of kept weights
    mask = Mask.load(out / teddy1["mask_file"])
    assert mask.num_kept == int(teddy1["weights_kept"])
    from safetensors.torch import load_file

    seed = cfg["seeds"][0]
    edges = load_file(str(out / "masks" / f"teddy_seed{seed}_level01.edges.safetensors"))["edge_index"]
    assert edges.size(1) == 2 * int(teddy1["edges_kept"])

    # a rerun of the same config resumes: nothing recomputed, nothing replaced
    before = (out / "levels.csv").read_bytes()
    torch.set_num_threads(1)
    try:
        assert main(args) == 0
    finally:
        torch.set_num_threads(threads)
    assert (out / "levels.csv").read_bytes() == before
    assert json.loads((out / "summary.json").read_text())["levels"] == summary["levels"]
