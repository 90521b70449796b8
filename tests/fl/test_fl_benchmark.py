"""The federated benchmark's report logic (simulations/fl_benchmark.py): labelled variants, the
equal-uplink accuracy (each seed held to the reference's bytes in the same seed) and
``--report-only --include`` merging another benchmark folder."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("fl_benchmark", REPO / "simulations/fl_benchmark.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _rows(bytes_per_round: int, accs: list[float]) -> list[dict]:
    """rounds.csv rows as read_csv gives them: round 0 (no uplink), then one row per round."""
    rows = [{"round": "0", "global_accuracy": "0.1", "uplink_bytes": "0"}]
    rows += [{"round": str(i + 1), "global_accuracy": str(a), "uplink_bytes": str(bytes_per_round)}
             for i, a in enumerate(accs)]
    return rows


def _write_folder(root: Path, runs: dict[str, dict[int, tuple[int, list[float]]]]) -> Path:
    """A benchmark --out folder: results.json (no recorded run folders, as older runs wrote it)
    and label/seed<s>/rounds.csv."""
    results = {}
    for label, per_seed in runs.items():
        results[label] = {}
        for seed, (per_round, accs) in per_seed.items():
            run = root / label / f"seed{seed}"
            run.mkdir(parents=True)
            rows = _rows(per_round, accs)
            with open(run / "rounds.csv", "w", newline="") as fh:
                w = csv.DictWriter(fh, list(rows[0]))
                w.writeheader()
                w.writerows(rows)
            results[label][str(seed)] = {"wall_seconds": 1.0, "summary": {
                "rounds": len(accs), "final_global_accuracy": accs[-1],
                "best_global_accuracy": max(accs), "final_personalized_accuracy": accs[-1],
                "uplink_bytes_per_client_round": per_round / 10,
                "downlink_bytes_per_client_round": per_round / 10,
                "uplink_bits_per_kept_weight": 1.0, "downlink_bits_per_kept_weight": 1.0,
                "client_train_seconds_per_round": 1.0, "total_uplink_bytes": per_round * len(accs)}}
    (root / "results.json").write_text(json.dumps(results))
    return root


def test_variant_parsed_and_bad_ones_refused_in_one_line(bench, capsys):
    args = bench.parse_args(["--variant", "fsub2:fedavg-subnet:train.local_epochs=2,seed=3"])
    assert args.variant == [("fsub2", "fedavg-subnet", ["train.local_epochs=2", "seed=3"])]
    for bad, says in [("fedpm:fedpm:fedpm.keep_priors=true", "is a method name"),
                      ("x:nosuch:a=1", "unknown method"),
                      ("x:fedpm:keep_priors", "KEY=V"),
                      ("x:fedpm", "LABEL:METHOD"),
                      ("a/b:fedpm:a=1", "names a folder")]:
        with pytest.raises(SystemExit) as e:
            bench.parse_args(["--variant", bad])
        assert e.value.code == 2
        assert says in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench.parse_args(["--variant", "a:fedpm:x=1", "--variant", "a:fedavg:y=2"])
    assert "must differ" in capsys.readouterr().err


def test_equal_uplink_holds_each_seed_to_the_reference_bytes_of_the_same_seed(bench):
    accs = [0.1 * (i + 1) for i in range(8)]
    ref = {"0": {"rows": _rows(100, accs)}, "1": {"rows": _rows(150, accs)}}
    other = {"0": {"rows": _rows(200, accs)}, "1": {"rows": _rows(200, accs)}}
    budgets = bench.uplink_budgets(ref, [4, 8, 9])
    assert set(budgets) == {4, 8}                     # round 9 is past the reference's runs
    assert budgets[4] == {"0": 400.0, "1": 600.0, "mean": 500.0}
    # seed 0: 400 B fit 2 rounds of 200 B; seed 1: 600 B fit 3 (the mean, 500 B, would give 2)
    assert bench.acc_at_uplink(other["0"]["rows"], bench._budget(budgets[4], "0")) == (accs[1], 2)
    assert bench.acc_at_uplink(other["1"]["rows"], bench._budget(budgets[4], "1")) == (accs[2], 3)
    assert bench.acc_at_uplink(other["0"]["rows"], 199) == (None, None)   # not one round
    text, eq = bench.equal_uplink_table({"ref": ref, "other": other}, "ref", [4])
    assert "(round 2–3)" in text and "(round 4)" in text       # the reference reaches exactly R
    assert eq["accuracy"]["ref@4"][0] == pytest.approx(accs[3])


def test_uplink_to_reach_counts_bytes_until_the_first_round_at_the_accuracy(bench):
    rows = _rows(100, [0.5, 0.72, 0.65, 0.8])
    assert bench.uplink_to_reach(rows, 0.7) == (200.0, 2)       # the first round, not a later one
    assert bench.uplink_to_reach(rows, 0.9) == (None, None)
    text = bench.reach_table({"a": {"0": {"rows": rows}, "1": {"rows": _rows(100, [0.5] * 4)}}},
                             [0.7, 0.9])
    assert "(round 2), 1/2 seeds" in text and "| not reached |" in text


def test_report_only_includes_another_folder_under_a_prefix_and_keeps_it(bench, tmp_path, monkeypatch):
    mine = _write_folder(tmp_path / "mine", {"signscore": {0: (100, [0.5, 0.6, 0.7]),
                                                           1: (100, [0.5, 0.6, 0.8])},
                                             "fedpm": {0: (300, [0.6, 0.6, 0.6]),
                                                       1: (300, [0.6, 0.7, 0.7])}})
    other = _write_folder(tmp_path / "other", {"signscore": {0: (50, [0.7, 0.8, 0.9]),
                                                             1: (50, [0.7, 0.8, 0.9])}})
    (mine / "benchmark.json").write_text(json.dumps({"command": "python x", "total_seconds": 9.0,
                                                     "calibration": None}))
    assert bench.main(["--report-only", "--out", str(mine), "--include", f"{other}:b-",
                       "--uplink-at", "1,3", "--plot-dir", str(tmp_path / "img")]) == 0
    table = (mine / "table.md").read_text()
    assert "| b-signscore | 3 | 2 | 0.9000 ± 0.0000 |" in table
    assert "| signscore | 3 | 2 | 0.7500 ± 0.0707 |" in table
    # FedPM's 300 B a round: within SignScore's 300 B after round 3 it has done round 1 only
    assert "| fedpm | 0.6000 ± 0.0000 (round 1) |" in table.split("## Equal uplink bits")[1] \
        .replace("— (not one round) | ", "")
    for name in ("fl_bench_accuracy_vs_round.png", "fl_bench_accuracy_vs_uplink.png"):
        assert (tmp_path / "img" / name).stat().st_size > 0
    saved = json.loads((mine / "results.json").read_text())
    assert Path(saved["b-signscore"]["0"]["folder"]) == (other / "signscore" / "seed0").resolve()
    monkeypatch.setattr(bench, "plot_benchmark", lambda *a, **k: None)  # plots checked above
    assert bench.main(["--report-only", "--out", str(mine)]) == 0    # the merged row stays
    assert "| b-signscore |" in (mine / "table.md").read_text()


def test_append_one_seed_merges_rows_of_different_seed_counts(bench, tmp_path, monkeypatch):
    """``--append --seeds 1`` runs only the missing seed of each named row, keeps the other rows
    (with their own seed counts), and ``--personal-every`` reaches the runs' config."""
    out = _write_folder(tmp_path / "b", {"signscore": {0: (100, [0.5, 0.6, 0.7, 0.8])},
                                         "fedpm": {0: (300, [0.6, 0.6, 0.6, 0.6])}})
    ran = []

    def fake_run(cfg, folder):        # the in-memory Grid, stubbed: rounds.csv and a summary
        ran.append((cfg.seed, cfg.eval.personal_every))
        accs = [0.1 * (i + 1) for i in range(cfg.rounds)]
        rows = _rows(100, accs)
        rows[2]["personalized_accuracy"] = "0.9"
        Path(folder).mkdir(parents=True)
        with open(Path(folder) / "rounds.csv", "w", newline="") as fh:
            w = csv.DictWriter(fh, list(rows[0]) + ["personalized_accuracy"])
            w.writeheader()
            w.writerows(rows)
        return json.loads((out / "results.json").read_text())["signscore"]["0"]["summary"] | {
            "final_global_accuracy": accs[-1], "best_global_accuracy": accs[-1]}

    cfg = SimpleNamespace(rounds=0, seed=0, eval=SimpleNamespace(personal_every=1),
                          server=SimpleNamespace(checkpoint=True), output_dir="")
    monkeypatch.setattr(bench, "prepare", lambda *a, **k: cfg)
    monkeypatch.setattr(bench, "run_in_process", fake_run)
    monkeypatch.setattr(bench, "plot_benchmark", lambda *a, **k: None)
    args = ["--grid", "memory", "--rounds", "4", "--out", str(out), "--append", "--methods",
            "signscore", "--acc-at", "2,4"]
    assert bench.main([*args, "--seeds", "0,1", "--personal-every", "2"]) == 0
    assert ran == [(1, 2)]                                  # seed 0 was there already
    assert bench.main([*args, "--seeds", "2"]) == 0
    assert ran[-1] == (2, 1)                                # default: rounds // 5, at least 1
    saved = json.loads((out / "results.json").read_text())
    assert sorted(saved["signscore"]) == ["0", "1", "2"] and sorted(saved["fedpm"]) == ["0"]
    table = (out / "table.md").read_text()
    assert "| signscore | 4 | 3 |" in table and "| fedpm | 4 | 1 |" in table
    at = table.split("## Accuracy at rounds 2, 4")[1]
    # round 2: seed 0's 0.6 and the two stubbed runs' 0.2; personalized only where evaluated
    assert "| signscore | 3 | 0.3333 ± 0.2309 | 0.5333 ± 0.2309 | 0.9000 ± 0.0000, 2/3 seeds | — |" in at
    with pytest.raises(SystemExit):
        bench.parse_args(["--personal-every", "0"])
