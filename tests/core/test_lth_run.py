import json
from pathlib import Path

import pytest
import torch

from fedticket.cli import main
from fedticket.config import load_config
from fedticket.core import Mask, kept_count
from fedticket.errors import ConfigError
from fedticket.lth.config import LTHConfig
from fedticket.lth.runner import run_lth
from fedticket.lth.train import TrainSpec, train
from fedticket.results import read_csv

pytestmark = pytest.mark.usefixtures("one_torch_thread")

QUICKSTART = str(Path(__file__).resolve().parents[2] / "configs" / "lth" / "quickstart.yaml")
TINY = ["train_subset=600", "val_size=300", "test_subset=300", "iterations=20", "eval_every=5",
        "levels=2", "torch_threads=1"]


def _cfg(extra=()):
    return load_config(LTHConfig, QUICKSTART, TINY + list(extra))


def test_lth_run_levels_controls_and_files(tmp_path, data_root):
    out = tmp_path / "run"
    summary = run_lth(_cfg(), out, data_root, progress=False, say=lambda *a: None)
    rows = read_csv(out / "levels.csv")
    assert [(r["level"], r["variant"]) for r in rows] == [
        ("0", "dense"), ("1", "ticket"), ("1", "reinit"), ("1", "random_mask"),
        ("2", "ticket"), ("2", "reinit"), ("2", "random_mask")]
    n = int(rows[0]["kept"])
    masks = [Mask.load(out / f"levels/level_{k:02d}/mask.safetensors") for k in range(3)]
    for k, mask in enumerate(masks):
        assert mask.num_kept == kept_count(0.8 ** k, n)
    assert (masks[2].flat() & ~masks[1].flat()).sum() == 0  # nested
    for r in rows:  # controls have the ticket's density; early stop lies in the run
        assert 0 < int(r["early_stop_iteration"]) <= 20
        assert int(r["kept"]) == kept_count(0.8 ** int(r["level"]), n)
    saved = json.loads((out / "summary.json").read_text())
    assert saved["dense_test_accuracy"] == summary["dense_test_accuracy"] == float(rows[0]["test_accuracy"])
    assert "reinit_gap_at_sparsest" in saved["claims"]
    for f in ("config.yaml", "test_accuracy_vs_density.png", "early_stop_vs_density.png"):
        assert (out / f).exists()


def test_lth_resume_skips_finished_levels_and_refuses_another_config(tmp_path, data_root, monkeypatch):
    out = tmp_path / "run"
    run_lth(_cfg(), out, data_root, progress=False, say=lambda *a: None)
    before = (out / "levels.csv").read_text()
    import fedticket.lth.runner as runner

    calls = []
    real = runner.train
    monkeypatch.setattr(runner, "train", lambda *a, **k: calls.append(1) or real(*a, **k))
    run_lth(_cfg(), out, data_root, progress=False, say=lambda *a: None)
    assert calls == [] and (out / "levels.csv").read_text() == before
    run_lth(_cfg(["levels=3"]), out, data_root, progress=False, say=lambda *a: None)
    assert len(calls) == 3  # only level 3: ticket + two controls
    rows = read_csv(out / "levels.csv")
    assert rows[:7] == read_csv_text(before) and rows[-1]["level"] == "3"
    with pytest.raises(ConfigError, match="different config.*lr"):
        run_lth(_cfg(["lr=0.5"]), out, data_root, progress=False, say=lambda *a: None)


def read_csv_text(text):
    import csv
    import io

    return list(csv.DictReader(io.StringIO(text)))


def test_late_rewinding_anchor_is_the_trained_state(tmp_path, data_root):
    out = tmp_path / "late"
    run_lth(_cfg(["rewind_iteration=5", "levels=1", "controls=[]"]), out, data_root,
            progress=False, say=lambda *a: None)
    from safetensors.torch import load_file

    from fedticket.models import build_model

    anchor = load_file(str(out / "rewind.safetensors"))
    init = build_model("lenet300", (1, 28, 28), 10, seed=0).state_dict()
    assert not torch.equal(anchor["fc1.weight"], init["fc1.weight"])
    assert [r["variant"] for r in read_csv(out / "levels.csv")] == ["dense", "ticket"]


def test_cli_bad_config_is_one_line(tmp_path, capsys):
    assert main(["lth", "run", "-c", QUICKSTART, "--set", "prune_fraction=2",
                 "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fedticket: error: prune_fraction") and err.count("\n") == 1
    assert main(["lth", "run", "-c", QUICKSTART, "--set", "controls=[bogus]",
                 "--out", str(tmp_path / "x")]) == 2
    assert "unknown control" in capsys.readouterr().err


def test_early_stop_iteration_is_the_best_validation_iteration():
    torch.manual_seed(0)

    class S:
        pass
    s = S()
    g = torch.Generator().manual_seed(0)
    s.x_train = torch.randn(256, 1, 28, 28, generator=g)
    s.y_train = torch.randint(0, 10, (256,), generator=g)
    s.x_val, s.y_val = s.x_train[:64], s.y_train[:64]
    s.x_test, s.y_test = s.x_train[64:128], s.y_train[64:128]
    from fedticket.models import build_model

    model = build_model("lenet300", seed=0)
    seen = []
    import fedticket.lth.train as tr

    real = tr.accuracy

    def spy(m, x, y, batch=2000):
        a = real(m, x, y, batch)
        if x is s.x_val:
            seen.append(a)
        return a
    tr.accuracy = spy
    try:
        res = train(model, None, s, TrainSpec(iterations=30, batch_size=32, eval_every=5), seed=0)
    finally:
        tr.accuracy = real
    evals = seen[:6]  # iterations 5, 10, ..., 30 (then the final re-evaluation)
    best = max(evals)
    assert res.early_stop_iteration == 5 * (evals.index(best) + 1)
    assert res.best_val_accuracy == best


def test_resume_refuses_a_damaged_ticket_state(tmp_path, data_root):
    from fedticket.errors import UserError

    out = tmp_path / "run"
    run_lth(_cfg(), out, data_root, progress=False, say=lambda *a: None)
    state = out / "levels/level_02/ticket.safetensors"
    data = bytearray(state.read_bytes())
    data[-64:] = bytes(b ^ 0xFF for b in data[-64:])  # 64 bytes of tensor data flipped
    state.write_bytes(bytes(data))
    with pytest.raises(UserError, match="ticket.safetensors fails its SHA-256 checksum"):
        run_lth(_cfg(["levels=3"]), out, data_root, progress=False, say=lambda *a: None)
