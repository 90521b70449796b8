"""The benchmark report (simulations/graph_benchmark.py --report-only): official vs fedticket
side by side, mean ± std over seeds from levels.csv, and the TEDDY-vs-baseline counts."""

from __future__ import annotations

import csv
import importlib.util
import statistics
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
FIELDS = ["method", "level", "graph_sparsity", "weight_sparsity", "val_accuracy", "test_accuracy",
          "seconds", "seed", "cumulative_seconds", "edges_kept", "weights_kept", "best_epoch",
          "mask_file"]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("graph_benchmark", REPO / "simulations/graph_benchmark.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _folder(tmp: Path, dataset: str, model: str, rows: list[tuple]) -> Path:
    tmp.mkdir(parents=True)
    (tmp / "config.yaml").write_text(yaml.safe_dump({"name": f"{dataset}_{model}", "dataset": dataset,
                                                     "model": {"name": model}}))
    with open(tmp / "levels.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, FIELDS)
        w.writeheader()
        for method, level, seed, acc in rows:
            w.writerow(dict(method=method, level=level, graph_sparsity=0.05 * level,
                            weight_sparsity=0.2 * level, val_accuracy=acc, test_accuracy=acc,
                            seconds=1.0, seed=seed, cumulative_seconds=2.0 * level + 1,
                            edges_kept=1, weights_kept=1, best_epoch=0, mask_file=""))
    return tmp


def test_side_by_side_with_the_official_means(bench, tmp_path):
    off = bench.OFFICIAL_TEDDY[("cora", "gcn")]
    rows = [("dense", 0, s, (off[0] + d) / 100) for s, d in ((1, 1.0), (2, 0.0), (3, -0.4))]
    rows += [("teddy", 5, s, (off[5] + d) / 100) for s, d in ((1, -1.0), (2, -0.5), (3, 0.0))]
    res = bench.load_folder(_folder(tmp_path / "r", "cora", "gcn", rows))
    assert res["acc"][("teddy", 5)] == pytest.approx([off[5] - 1.0, off[5] - 0.5, off[5]])
    md = bench.report([res], "cmd")
    dense_mean = statistics.mean([off[0] + 1.0, off[0], off[0] - 0.4])
    assert f"| dense | 0.000 | 0.000 | {off[0]:.2f} | {dense_mean:.2f} ± " in md
    assert f"| {dense_mean - off[0]:+.2f} |" in md
    std5 = statistics.stdev([off[5] - 1.0, off[5] - 0.5, off[5]])
    assert f"{off[5] - 0.5:.2f} ± {std5:.2f} | -0.50 |" in md
    # dense is above its official mean, level 5 below: only level 5 is listed
    assert "Below the official mean at: L5 " in md


def test_teddy_against_baselines_counts_levels(bench, tmp_path):
    rows = [("dense", 0, 1, 0.8)]
    rows += [("teddy", k, 1, 0.8) for k in (5, 10)]
    rows += [("random", 5, 1, 0.7), ("random", 10, 1, 0.9), ("ugs", 5, 1, 0.8)]
    md = bench.report([bench.load_folder(_folder(tmp_path / "g", "cora", "gin", rows))], "cmd")
    assert "TEDDY ≥ random (mean) at 1 of 2 levels." in md
    assert "TEDDY ≥ ugs (mean) at 1 of 1 levels." in md  # ties count as at-or-above
    assert "official" not in md.split("## ")[1].split("\n")[2]  # no official column for GIN


def test_report_only_refuses_a_folder_without_results(bench, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        bench.main(["--report-only", str(tmp_path)])
    assert e.value.code == 2
    assert "no config.yaml + levels.csv" in capsys.readouterr().err
