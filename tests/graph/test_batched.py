"""graph.batched: TEDDY's levels trained in one loop are the sequential level runs, level by level.

``exact=True`` runs the level runs' own products and autograd's loss gradient: bit for bit the
sequential runs. The default fast path (embedding-bag products, closed-form loss gradient) sums
in another order, so it is checked against the exact path to float rounding.
"""

from __future__ import annotations

import pytest
import torch

from fedticket.core.l0ball import weights_to_keep
from graph import batched
from graph.config import GraphConfig, ModelConfig, SweepConfig, TeddyConfig, TrainConfig
from graph.edges import undirected_pairs
from graph.features import SparseFeatures
from graph.models import build_model
from graph.ops import gcn_out_kernels
from graph.sweep import run_seed
from graph.train import train_node_classifier
from graph.transforms import teddy_ranking

EPOCHS = 12
SEED = 7


def _setup(graph_factory, sparse: bool):
    data = graph_factory(num_nodes=90, num_features=30, seed=3)
    x = data.x
    if sparse:  # bag-of-words-like: most entries zero, so the CSR path runs
        x = SparseFeatures(torch.where(x > 0.4, x, torch.zeros(())))
    torch.manual_seed(SEED)
    model = build_model("gcn", data.num_features, 3, 16, dropout=0.5)
    init = {k: v.detach().clone() for k, v in model.state_dict().items()}
    teacher = train_node_classifier(model, x, data, data.edge_index, epochs=EPOCHS).logits
    ranking = teddy_ranking(undirected_pairs(data.edge_index, data.num_nodes))
    n = sum(p.numel() for p in model.parameters())
    levels = [(0.05, 0.2), (0.3, 0.6), (0.6, 0.95), (0.1, 0.0)]  # the last: no weight pruning
    eis = [data.edge_index[:, ranking.keep_mask(gs)] for gs, _ in levels]
    keeps = [weights_to_keep(n, ws) if ws > 0 else None for _, ws in levels]
    return data, x, model, init, teacher, eis, keeps


def _sequential(model, init, x, data, ei, keep, teacher):
    model.load_state_dict(init)
    torch.manual_seed(SEED)
    return train_node_classifier(model, x, data, ei, epochs=EPOCHS, teacher_logits=teacher,
                                 kd_lambda=10.0, l0_keep=keep)


def _batched(model, init, x, data, eis, keeps, teacher, exact=True, temperature=1.0):
    return batched.train_gcn_levels(model, init, x, data, eis, keeps, seed=SEED, epochs=EPOCHS,
                                    teacher_logits=teacher, kd_lambda=10.0,
                                    temperature=temperature, exact=exact)


@pytest.mark.parametrize("sparse", [False, True], ids=["dense-x", "sparse-x"])
def test_each_batched_level_is_the_sequential_run(graph_factory, sparse):
    data, x, model, init, teacher, eis, keeps = _setup(graph_factory, sparse)
    got = _batched(model, init, x, data, eis, keeps, teacher)
    n = sum(p.numel() for p in model.parameters())
    for ei, keep, b in zip(eis, keeps, got):
        s = _sequential(model, init, x, data, ei, keep, teacher)
        # same operations in the same order, the same dropout masks: the same numbers
        torch.testing.assert_close(b.logits, s.logits, rtol=0, atol=1e-6)
        assert (b.best_epoch, b.val_accuracy, b.test_accuracy) == (s.best_epoch, s.val_accuracy,
                                                                   s.test_accuracy)
        if keep is None:
            assert b.mask is None and s.mask is None
            continue
        assert b.mask.num_kept == keep == s.mask.num_kept  # the level's ℓ0 budget, exactly
        assert b.mask.numel == n
        for name in s.mask.keys():
            assert torch.equal(b.mask[name], s.mask[name]), name


@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_fast_path_is_the_exact_path_to_float_rounding(graph_factory, temperature):
    data, x, model, init, teacher, eis, keeps = _setup(graph_factory, sparse=True)
    exact = _batched(model, init, x, data, eis, keeps, teacher, True, temperature)
    fast = _batched(model, init, x, data, eis, keeps, teacher, False, temperature)
    for e, f in zip(exact, fast):
        torch.testing.assert_close(f.logits, e.logits, rtol=1e-5, atol=1e-5)
        assert (f.best_epoch, f.val_accuracy, f.test_accuracy) == (e.best_epoch, e.val_accuracy,
                                                                   e.test_accuracy)
        assert (f.mask is None) == (e.mask is None)
        if e.mask is not None:
            assert f.mask.num_kept == e.mask.num_kept
            assert all(torch.equal(f.mask[n], e.mask[n]) for n in e.mask.keys())


def test_bag_matrix_is_the_csr_product():
    from graph.ops import BagMatrix

    g = torch.Generator().manual_seed(0)
    dense = torch.rand(40, 30, generator=g)
    dense[dense < 0.8] = 0
    dense[5] = 0  # an empty row, and a trailing one
    dense[-1] = 0
    csr = dense.to_sparse_csr()
    h = torch.randn(30, 9, generator=g)
    torch.testing.assert_close(BagMatrix(csr) @ h, dense @ h, rtol=1e-6, atol=1e-6)
    assert torch.count_nonzero((BagMatrix(csr) @ h)[[5, -1]]) == 0
    with pytest.raises(ValueError, match="cannot multiply"):
        BagMatrix(csr) @ torch.randn(29, 9)
    with pytest.raises(ValueError, match="CSR"):
        BagMatrix(dense)


def test_levels_do_not_leak_into_each_other(graph_factory):
    data, x, model, init, teacher, eis, keeps = _setup(graph_factory, sparse=True)
    base = _batched(model, init, x, data, eis, keeps, teacher)
    # another edge set and budget for level 0 only
    eis2 = [eis[2]] + eis[1:]
    keeps2 = [keeps[2]] + keeps[1:]
    other = _batched(model, init, x, data, eis2, keeps2, teacher)
    assert other[0].mask.num_kept == keeps[2]
    assert not torch.equal(other[0].logits, base[0].logits)
    for a, b in zip(base[1:], other[1:]):
        assert torch.equal(a.logits, b.logits) and a.best_epoch == b.best_epoch
    # level 0 with level 2's inputs is level 2
    torch.testing.assert_close(other[0].logits, base[2].logits, rtol=0, atol=0)


def test_batched_rejects_what_it_does_not_cover(graph_factory):
    data = graph_factory()
    gin = build_model("gin", data.num_features, 3, 8)
    init = {k: v.clone() for k, v in gin.state_dict().items()}
    with pytest.raises(TypeError, match="GCN only"):
        batched.train_gcn_levels(gin, init, data.x, data, [data.edge_index], [None], seed=0)
    assert batched.supports(GraphConfig())
    assert not batched.supports(GraphConfig(model=ModelConfig(name="gin")))
    assert not batched.supports(GraphConfig(model=ModelConfig(name="gat")))
    assert not batched.supports(GraphConfig(teddy=TeddyConfig(weight_scope="layer")))


def test_sweep_rows_match_level_by_level(graph_factory):
    data = graph_factory(num_nodes=90, num_features=30, seed=5)
    rows = {}
    for flag in (False, True):
        cfg = GraphConfig(methods=["teddy"], batch_levels=flag, model=ModelConfig(hidden=16),
                          train=TrainConfig(epochs=EPOCHS), sweep=SweepConfig(num_levels=4))
        sched = cfg.sweep.schedule()
        rows[flag] = run_seed(cfg, data, data.x, SEED, sched, sched)
    assert [r.method for r in rows[True]] == ["dense"] + ["teddy"] * 4
    for a, b in zip(rows[False], rows[True]):
        assert (a.method, a.level, a.edges_kept, a.weights_kept, a.best_epoch, a.val_accuracy,
                a.test_accuracy) == (b.method, b.level, b.edges_kept, b.weights_kept, b.best_epoch,
                                     b.val_accuracy, b.test_accuracy)


@pytest.mark.parametrize("n_levels", [4, 1], ids=["levels", "one-level"])
def test_level_worker_threads_give_the_same_numbers(graph_factory, n_levels):
    data, x, model, init, teacher, eis, keeps = _setup(graph_factory, sparse=True)
    eis, keeps = eis[:n_levels], keeps[:n_levels]  # one level: the teacher's case, no workers
    one = _batched(model, init, x, data, eis, keeps, teacher, exact=False)
    before = torch.get_num_threads()
    torch.set_num_threads(2)  # two level workers
    try:
        two = _batched(model, init, x, data, eis, keeps, teacher, exact=False)
        assert torch.get_num_threads() == 2  # restored after the run
    finally:
        torch.set_num_threads(before)
    for a, b in zip(one, two):
        assert torch.equal(a.logits, b.logits) and a.best_epoch == b.best_epoch
        assert (a.mask is None) == (b.mask is None)
        if a.mask is not None:
            assert all(torch.equal(a.mask[n], b.mask[n]) for n in a.mask.keys())


@pytest.mark.skipif(gcn_out_kernels() is None, reason="no C compiler: only the torch ops run")
def test_fast_path_with_and_without_kernels_agree(graph_factory, monkeypatch):
    """The batched fast path with the fused loops, and with them switched off (torch ops), train
    the same levels to float rounding: same best epochs, accuracies and masks."""
    data, x, model, init, teacher, eis, keeps = _setup(graph_factory, sparse=True)
    fused = _batched(model, init, x, data, eis, keeps, teacher, exact=False)
    monkeypatch.setattr(batched, "gcn_out_kernels", lambda: None)
    plain = _batched(model, init, x, data, eis, keeps, teacher, exact=False)
    for f, p in zip(fused, plain):
        torch.testing.assert_close(f.logits, p.logits, rtol=0, atol=1e-5)
        assert (f.best_epoch, f.val_accuracy, f.test_accuracy) == (p.best_epoch, p.val_accuracy,
                                                                   p.test_accuracy)
        if p.mask is not None:
            for name in p.mask.keys():
                assert torch.equal(f.mask[name], p.mask[name]), name


@pytest.mark.parametrize("n_levels", [4, 1], ids=["levels", "one-level"])
def test_a_failing_level_worker_stops_the_run_with_its_error(graph_factory, monkeypatch, n_levels):
    """Workers run their epochs without a barrier per step (graph.batched._MaskStream): one
    worker's error must end the others and the mask drawer and reach the caller, not hang."""
    data, x, model, init, teacher, eis, keeps = _setup(graph_factory, sparse=True)
    calls = {"n": 0}
    project = batched._Level.project

    def failing(self, epoch):
        calls["n"] += 1
        if epoch == 3 and self is first_level[0]:
            raise ArithmeticError("level failed at epoch 3")
        return project(self, epoch)

    first_level = []
    init_level = batched._Level.__init__

    def remember(self, *a, **k):
        init_level(self, *a, **k)
        if not first_level:
            first_level.append(self)

    monkeypatch.setattr(batched._Level, "__init__", remember)
    monkeypatch.setattr(batched._Level, "project", failing)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with pytest.raises(ArithmeticError, match="epoch 3"):
            _batched(model, init, x, data, eis[:n_levels], keeps[:n_levels], teacher, exact=False)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert calls["n"] < EPOCHS * n_levels  # stopped early, not run to the end
