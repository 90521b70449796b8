"""UGS round state: an interrupted UGS sweep continues after its last saved round and gives the
uninterrupted run's rows; a state that cannot be used is reported and recomputed; --overwrite
removes it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fedticket.core import tensorfile
from graph.config import GraphConfig, ModelConfig, SweepConfig, TrainConfig, UGSConfig
from graph.sweep import run_seed
from graph.ugs import UGS

REPO = Path(__file__).resolve().parents[2]
SEED = 7
LEVELS = [2, 4]


def _cfg(model: str = "gcn") -> GraphConfig:
    return GraphConfig(methods=["ugs"], model=ModelConfig(name=model, hidden=16, heads=2),
                       train=TrainConfig(epochs=6), ugs=UGSConfig(mask_epochs=5),
                       sweep=SweepConfig(num_levels=5, levels=LEVELS))


def _numbers(rows):
    """Everything of a row but the wall times."""
    return [(r.method, r.level, r.val_accuracy, r.test_accuracy, r.best_epoch, r.edges_kept,
             r.weights_kept) for r in rows]


class _Interrupt(Exception):
    pass


@pytest.fixture
def count_rounds(monkeypatch):
    """Counts UGS mask phases; ``stop_at[0] = r`` makes round r's mask phase raise."""
    calls: list[int] = []
    stop_at = [None]
    real = UGS._mask_phase

    def spy(self, r):
        if r == stop_at[0]:
            raise _Interrupt(f"interrupted in round {r}")
        calls.append(r)
        return real(self, r)

    monkeypatch.setattr(UGS, "_mask_phase", spy)
    return calls, stop_at


def _sweep(cfg, data, state_dir=None, done=(), rows=None, levels=None, seed=SEED):
    if levels is not None:
        cfg.sweep.levels = levels
    sched = cfg.sweep.schedule()
    full = type(cfg.sweep)(num_levels=cfg.sweep.num_levels).schedule()
    out = [] if rows is None else rows
    run_seed(cfg, data, data.x, seed, sched, full, state_dir=state_dir, done=set(done),
             on_row=out.append)
    return out


@pytest.mark.parametrize("model", ["gcn", "gat"])
def test_interrupted_ugs_sweep_resumes_after_the_last_saved_round(graph_factory, tmp_path,
                                                                  count_rounds, model):
    calls, stop_at = count_rounds
    data = graph_factory(num_nodes=70, seed=3)
    straight = _sweep(_cfg(model), data)                      # no state anywhere
    assert calls == [1, 2, 3, 4]
    calls.clear()
    state = tmp_path / "ugs_state"
    stop_at[0] = 4                                            # dies in round 4: rounds 1-3 saved
    got: list = []
    with pytest.raises(_Interrupt):
        _sweep(_cfg(model), data, state, rows=got)
    assert calls == [1, 2, 3] and [r.level for r in got] == [0, 2]
    assert (state / f"seed{SEED}.safetensors").is_file()
    calls.clear()
    stop_at[0] = None
    resumed = _sweep(_cfg(model), data, state, done={(r.method, r.level) for r in got})
    assert calls == [4]                                       # only the round not saved
    assert _numbers(got + resumed) == _numbers(straight)
    # level 4's cumulative time counts rounds 1-3 of the interrupted process too
    tensors, _ = tensorfile.loads((state / f"seed{SEED}.safetensors").read_bytes(), "state")
    rounds = tensors["round_seconds"].tolist()
    assert len(rounds) == 4
    assert resumed[0].cumulative_seconds - resumed[0].seconds == pytest.approx(sum(rounds[:3]))


def test_a_level_below_the_saved_rounds_needs_no_mask_phase(graph_factory, tmp_path, count_rounds):
    calls, _ = count_rounds
    data = graph_factory(num_nodes=60, seed=4)
    state = tmp_path / "ugs_state"
    first = _sweep(_cfg(), data, state)                       # levels 2 and 4: rounds 1-4 saved
    calls.clear()
    later = _sweep(_cfg(), data, state, done={(r.method, r.level) for r in first}, levels=[3])
    assert calls == []                                        # round 3's masks read back
    calls.clear()
    fresh = _sweep(_cfg(), data, levels=[3])
    assert calls == [1, 2, 3]
    assert _numbers(later) == _numbers([r for r in fresh if r.method == "ugs"])


@pytest.mark.parametrize("damage", ["bytes", "other_config", "other_seed", "counts"])
def test_an_unusable_state_is_reported_and_recomputed(graph_factory, tmp_path, count_rounds,
                                                      capsys, damage):
    calls, _ = count_rounds
    data = graph_factory(num_nodes=60, seed=5)
    state = tmp_path / "ugs_state"
    straight = _sweep(_cfg(), data, state)
    path = state / f"seed{SEED}.safetensors"
    cfg, seed = _cfg(), SEED
    if damage == "bytes":
        raw = bytearray(path.read_bytes())
        raw[-3] ^= 0xFF
        path.write_bytes(bytes(raw))
        why = "checksum"
    elif damage == "other_config":
        cfg.ugs.edge_l1 = 0.5
        why = "another config"
    elif damage == "other_seed":   # seed SEED+1's file holding seed SEED's state
        seed = SEED + 1
        path.rename(state / f"seed{seed}.safetensors")
        why = f"seed {SEED}'s state, not seed {seed}'s"
    else:                          # a pruning record that keeps one edge too few after round 1
        tensors, meta = tensorfile.loads(path.read_bytes(), "state")
        at = tensors["pair_pruned_at"].clone()
        at[int((at == 0).nonzero()[0])] = 1
        tensors["pair_pruned_at"] = at
        meta.pop(tensorfile.CHECKSUM_KEY)
        path.write_bytes(tensorfile.dumps(tensors, meta))
        why = "after round 1 it keeps"
    calls.clear()
    capsys.readouterr()
    again = _sweep(cfg, data, state, seed=seed)
    err = capsys.readouterr().err
    assert "ignoring UGS round state" in err and why in err and err.count("\n") == 1
    assert calls == [1, 2, 3, 4]
    if damage in ("bytes", "counts"):
        assert _numbers(again) == _numbers(straight)


def _ugs_args(data):
    from fedticket.core import prunable_parameters
    from graph.edges import undirected_pairs
    from graph.levels import make_levels
    from graph.models import build_model

    torch.manual_seed(0)
    model = build_model("gcn", data.num_features, 3, 16)
    up = undirected_pairs(data.edge_index, data.num_nodes)
    n_w = sum(p.numel() for p in prunable_parameters(model).values())
    levels = make_levels(type(_cfg().sweep)(num_levels=5).schedule(), up.num_pairs, n_w)
    init = {k: v.clone() for k, v in model.state_dict().items()}
    return (model, init, data.x, data, data.edge_index, up), levels


def test_rounds_run_in_order_and_read_back(graph_factory):
    data = graph_factory(num_nodes=50, seed=6)
    args, levels = _ugs_args(data)
    ugs = UGS(*args, levels=levels, mask_epochs=3, seed=1)
    with pytest.raises(ValueError, match="cannot follow round 0"):
        ugs.run_round(2)
    r1, r2 = ugs.run_round(1), ugs.run_round(2)
    for want in (r1, r2):
        back = ugs.at_round(want.round)
        assert torch.equal(back.pair_keep, want.pair_keep)
        assert all(torch.equal(back.weight_mask[n], want.weight_mask[n]) for n in want.weight_mask)
    other = UGS(*args, levels=levels, mask_epochs=3, seed=1)
    other.restore(ugs.state_tensors(), 2)
    assert torch.equal(other.pair_keep, ugs.pair_keep) and other.rounds_done == 2
    r3, o3 = ugs.run_round(3), other.run_round(3)
    assert torch.equal(r3.pair_keep, o3.pair_keep)
    assert all(torch.equal(r3.weight_mask[n], o3.weight_mask[n]) for n in r3.weight_mask)


def test_overwrite_removes_the_round_state(tmp_path):
    from fedticket.config import to_dict
    from fedticket.results import RunDir
    from graph.run import check_results_folder

    out = tmp_path / "run"
    RunDir(out).save_config(to_dict(GraphConfig()))
    (out / "ugs_state").mkdir()
    (out / "ugs_state" / "seed0.safetensors").write_bytes(b"x")
    assert check_results_folder(out, to_dict(GraphConfig())) == []   # no rows: state left alone
    assert (out / "ugs_state").is_dir()
    assert check_results_folder(out, to_dict(GraphConfig()), overwrite=True) == []
    assert not (out / "ugs_state").exists()


def test_cli_run_interrupted_in_a_ugs_round_resumes_to_the_straight_levels_csv(
        cora_root, tmp_path, count_rounds):
    """``graph.run`` end to end on Cora: a run killed in round 3 and rerun into its folder writes
    the straight run's levels.csv rows (wall times aside) and recomputes round 3 only."""
    import argparse
    import csv

    from graph.run import main

    calls, stop_at = count_rounds
    sets = ["methods=[ugs]", "train.epochs=4", "ugs.mask_epochs=3", "sweep.num_levels=3",
            "model.hidden=32", "save_masks=false"]

    def run(out):
        main(argparse.Namespace(config=str(REPO / "configs/graph/quickstart.yaml"), set=sets,
                                out=str(out), levels="1,3", data_root=str(cora_root), quiet=True))
        with open(out / "levels.csv", newline="") as fh:
            return [{k: v for k, v in r.items() if "seconds" not in k} for r in csv.DictReader(fh)]

    straight = run(tmp_path / "straight")
    calls.clear()
    stop_at[0] = 3
    with pytest.raises(_Interrupt):
        run(tmp_path / "cut")
    assert calls == [1, 2]
    calls.clear()
    stop_at[0] = None
    assert run(tmp_path / "cut") == straight
    assert calls == [3]
    # a finished sweep keeps its state: adding level 2 later costs its retraining only
    calls.clear()
    main(argparse.Namespace(config=str(REPO / "configs/graph/quickstart.yaml"), set=sets,
                            out=str(tmp_path / "cut"), levels="2", data_root=str(cora_root),
                            quiet=True))
    assert calls == [] and (tmp_path / "cut" / "ugs_state" / "seed3846.safetensors").is_file()
