"""TEDDY's levers beyond the official method: the ℓ0 sparsity ramp (``teddy.ramp_epochs``) and
the teacher's epoch (``teddy.teacher``), in the level-by-level loop and the batched fast path."""

from __future__ import annotations

import pytest
import torch

from fedticket.config import load_config
from fedticket.core.l0ball import ramp_keep, weights_to_keep
from fedticket.errors import ConfigError
from graph import batched
from graph.config import GraphConfig, ModelConfig, SweepConfig, TeddyConfig, TrainConfig
from graph.edges import undirected_pairs
from graph.features import SparseFeatures
from graph.models import build_model
from graph.sweep import run_seed
from graph.train import train_node_classifier
from graph.transforms import teddy_ranking

EPOCHS = 14
RAMP = 6
SEED = 11


def test_ramp_keep_falls_from_everything_to_the_budget():
    total, keep, ramp = 1000, 37, 10
    ks = [ramp_keep(total, keep, t, ramp) for t in range(15)]
    assert ks[0] > 0.6 * total  # the first projection removes little (cubic: (1 - 1/10)³ = 0.73)
    assert all(a >= b for a, b in zip(ks, ks[1:]))  # never grows back
    assert all(k > keep for k in ks[:ramp - 1])
    assert ks[ramp - 1:] == [keep] * (15 - ramp + 1)  # the level's budget from step ramp-1 on
    # no ramp: the budget from the first step, as TEDDY
    assert [ramp_keep(total, keep, t, r) for r in (0, 1) for t in range(3)] == [keep] * 6


def _setup(graph_factory, sparse=True):
    data = graph_factory(num_nodes=90, num_features=30, seed=3)
    x = SparseFeatures(torch.where(data.x > 0.4, data.x, torch.zeros(()))) if sparse else data.x
    torch.manual_seed(SEED)
    model = build_model("gcn", data.num_features, 3, 16, dropout=0.5)
    init = {k: v.detach().clone() for k, v in model.state_dict().items()}
    teacher = train_node_classifier(model, x, data, data.edge_index, epochs=EPOCHS)
    ranking = teddy_ranking(undirected_pairs(data.edge_index, data.num_nodes))
    n = sum(p.numel() for p in model.parameters())
    levels = [(0.05, 0.2), (0.6, 0.95), (0.1, 0.0)]  # the last: no weight pruning, so no ramp
    eis = [data.edge_index[:, ranking.keep_mask(gs)] for gs, _ in levels]
    keeps = [weights_to_keep(n, ws) if ws > 0 else None for _, ws in levels]
    return data, x, model, init, teacher, eis, keeps, n


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_ramp_projects_to_the_ramped_budget_and_picks_only_final_budget_epochs(graph_factory, scope):
    data, x, model, init, teacher, eis, keeps, n = _setup(graph_factory, sparse=False)
    keep = keeps[1]
    counts = []
    model.load_state_dict(init)
    res = train_node_classifier(model, x, data, eis[1], epochs=EPOCHS, teacher_logits=teacher.logits,
                                kd_lambda=10.0, l0_keep=keep, l0_ramp=RAMP, l0_scope=scope,
                                step_callback=lambda e, m: counts.append(m.num_kept))
    want = [ramp_keep(n, keep, t, RAMP) for t in range(EPOCHS)]
    if scope == "global":
        assert counts == want
    else:  # per tensor: each tensor's rounded share of the step's density
        assert all(abs(c - w) <= 2 for c, w in zip(counts, want)) and counts[-1] <= keep + 2
    assert counts[0] > counts[RAMP - 2] > counts[RAMP - 1]
    # the reported epoch, and its mask, are at the level's sparsity, never a denser ramp step
    assert res.best_epoch >= RAMP - 1
    assert res.mask.num_kept == counts[res.best_epoch]


def test_ramp_changes_the_run_and_zero_is_the_official_one(graph_factory):
    data, x, model, init, teacher, eis, keeps, n = _setup(graph_factory, sparse=False)
    runs = {}
    for ramp in (0, RAMP):
        model.load_state_dict(init)
        torch.manual_seed(SEED)
        runs[ramp] = train_node_classifier(model, x, data, eis[1], epochs=EPOCHS,
                                           teacher_logits=teacher.logits, kd_lambda=10.0,
                                           l0_keep=keeps[1], l0_ramp=ramp)
    assert not torch.equal(runs[0].logits, runs[RAMP].logits)
    with pytest.raises(ValueError, match="l0_ramp"):
        train_node_classifier(model, x, data, eis[1], epochs=4, l0_keep=keeps[1], l0_ramp=5)


@pytest.mark.parametrize("sparse", [False, True], ids=["dense-x", "sparse-x"])
def test_batched_ramp_is_the_sequential_ramp(graph_factory, sparse):
    """exact=True: bit for bit the level runs; the fast path: the exact path to float rounding."""
    data, x, model, init, teacher, eis, keeps, n = _setup(graph_factory, sparse)
    kw = dict(seed=SEED, epochs=EPOCHS, teacher_logits=teacher.logits, kd_lambda=10.0, ramp=RAMP)
    exact = batched.train_gcn_levels(model, init, x, data, eis, keeps, exact=True, **kw)
    fast = batched.train_gcn_levels(model, init, x, data, eis, keeps, exact=False, **kw)
    for ei, keep, e, f in zip(eis, keeps, exact, fast):
        model.load_state_dict(init)
        torch.manual_seed(SEED)
        s = train_node_classifier(model, x, data, ei, epochs=EPOCHS, teacher_logits=teacher.logits,
                                  kd_lambda=10.0, l0_keep=keep, l0_ramp=RAMP)
        torch.testing.assert_close(e.logits, s.logits, rtol=0, atol=1e-6)
        torch.testing.assert_close(f.logits, e.logits, rtol=1e-5, atol=1e-5)
        for b in (e, f):
            assert (b.best_epoch, b.val_accuracy, b.test_accuracy) == (
                s.best_epoch, s.val_accuracy, s.test_accuracy)
            assert (b.mask is None) == (s.mask is None)
            if keep is not None:
                assert b.mask.num_kept == keep == s.mask.num_kept
                assert all(torch.equal(b.mask[k], s.mask[k]) for k in s.mask.keys())
            torch.testing.assert_close(b.last_logits, s.last_logits, rtol=1e-5, atol=1e-5)


def test_last_logits_are_the_final_weights_eval_pass(graph_factory):
    data, x, model, init, *_ = _setup(graph_factory)
    model.load_state_dict(init)
    torch.manual_seed(SEED)
    res = train_node_classifier(model, x, data, data.edge_index, epochs=EPOCHS)
    model.eval()
    with torch.no_grad():
        want = model(x, data.edge_index)
    torch.testing.assert_close(res.last_logits, want, rtol=0, atol=1e-6)
    assert res.best_epoch < EPOCHS - 1 or torch.equal(res.logits, res.last_logits)


@pytest.mark.parametrize("batch_levels", [False, True])
def test_sweep_options_reach_the_runs(graph_factory, batch_levels):
    """teddy.ramp_epochs and teddy.teacher change TEDDY's rows (not the dense one); the
    batched sweep gives the level-by-level sweep's rows."""
    data = graph_factory(num_nodes=90, num_features=30, seed=5)

    def rows(**teddy):
        cfg = GraphConfig(methods=["teddy"], batch_levels=batch_levels,
                          model=ModelConfig(hidden=16), train=TrainConfig(epochs=EPOCHS),
                          sweep=SweepConfig(num_levels=6, levels=[6]), teddy=TeddyConfig(**teddy))
        return run_seed(cfg, data, data.x, SEED, cfg.sweep.schedule(), cfg.sweep.schedule())

    base, ramped, last = rows(), rows(ramp_epochs=RAMP), rows(teacher="last")
    assert base[0].test_accuracy == ramped[0].test_accuracy == last[0].test_accuracy  # dense
    assert ramped[1].best_epoch >= RAMP - 1
    assert ramped[1].weights_kept == base[1].weights_kept
    assert (ramped[1].val_accuracy, ramped[1].best_epoch) != (base[1].val_accuracy, base[1].best_epoch) \
        or ramped[1].test_accuracy != base[1].test_accuracy
    if batch_levels:
        assert [r.test_accuracy for r in ramped] == [r.test_accuracy for r in _seq(data)]


def _seq(data):
    cfg = GraphConfig(methods=["teddy"], batch_levels=False, model=ModelConfig(hidden=16),
                      train=TrainConfig(epochs=EPOCHS), sweep=SweepConfig(num_levels=6, levels=[6]),
                      teddy=TeddyConfig(ramp_epochs=RAMP))
    return run_seed(cfg, data, data.x, SEED, cfg.sweep.schedule(), cfg.sweep.schedule())


def test_ramp_longer_than_training_is_refused(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train: {epochs: 50}\n")
    with pytest.raises(ConfigError, match="teddy.ramp_epochs .* train.epochs"):
        load_config(GraphConfig, path, ["teddy.ramp_epochs=60"])
    with pytest.raises(ConfigError, match="teacher"):
        load_config(GraphConfig, path, ["teddy.teacher=first"])
