"""graph.batched.StepMasks: the TEDDY students' batch replays the dropout masks the dense
teacher's run of the same seed drew, instead of drawing them again, with the same numbers."""

from __future__ import annotations

import pytest
import torch

from fedticket.core.l0ball import weights_to_keep
from graph import batched
from graph.edges import undirected_pairs
from graph.features import SparseFeatures
from graph.models import build_model
from graph.ops import gcn_out_kernels
from graph.transforms import teddy_ranking

EPOCHS, SEED = 10, 5

pytestmark = pytest.mark.skipif(gcn_out_kernels() is None,
                                reason="no C compiler: the fused path (which replays) does not run")


def _setup(graph_factory):
    data = graph_factory(num_nodes=90, num_features=30, seed=4)
    x = SparseFeatures(torch.where(data.x > 0.4, data.x, torch.zeros(())))
    torch.manual_seed(SEED)
    model = build_model("gcn", data.num_features, 3, 16, dropout=0.5)
    init = {k: v.detach().clone() for k, v in model.state_dict().items()}
    ranking = teddy_ranking(undirected_pairs(data.edge_index, data.num_nodes))
    n = sum(p.numel() for p in model.parameters())
    eis = [data.edge_index[:, ranking.keep_mask(gs)] for gs in (0.05, 0.3)]
    keeps = [weights_to_keep(n, ws) for ws in (0.2, 0.6)]
    return data, x, model, init, eis, keeps


def _count_draws(monkeypatch) -> list[int]:
    calls = [0]
    real = batched.dropout

    def counted(*a, **k):
        calls[0] += 1
        return real(*a, **k)
    monkeypatch.setattr(batched, "dropout", counted)
    return calls


def test_students_replay_the_teachers_masks_with_the_same_numbers(graph_factory, monkeypatch):
    data, x, model, init, eis, keeps = _setup(graph_factory)
    masks = batched.StepMasks()
    calls = _count_draws(monkeypatch)
    (teacher,) = batched.train_gcn_levels(model, init, x, data, [data.edge_index], [None],
                                          seed=SEED, epochs=EPOCHS, step_masks=masks)
    assert calls[0] == EPOCHS and len(masks.bits) == EPOCHS and masks.complete
    kw = dict(seed=SEED, epochs=EPOCHS, teacher_logits=teacher.logits, kd_lambda=10.0)
    drawn = batched.train_gcn_levels(model, init, x, data, eis, keeps, **kw)
    assert calls[0] == 2 * EPOCHS  # without the shared masks the students draw their own
    replayed = batched.train_gcn_levels(model, init, x, data, eis, keeps, step_masks=masks, **kw)
    assert calls[0] == 2 * EPOCHS  # replayed: not one draw
    for a, b in zip(drawn, replayed):
        assert torch.equal(a.logits, b.logits)
        assert (a.best_epoch, a.val_accuracy, a.test_accuracy) == (b.best_epoch, b.val_accuracy,
                                                                   b.test_accuracy)
        for name in a.mask.keys():
            assert torch.equal(a.mask[name], b.mask[name]), name


def test_another_seed_or_length_draws_its_own(graph_factory, monkeypatch):
    data, x, model, init, eis, keeps = _setup(graph_factory)
    masks = batched.StepMasks()
    batched.train_gcn_levels(model, init, x, data, [data.edge_index], [None], seed=SEED,
                             epochs=EPOCHS, step_masks=masks)
    calls = _count_draws(monkeypatch)
    batched.train_gcn_levels(model, init, x, data, eis, keeps, seed=SEED + 1, epochs=EPOCHS,
                             step_masks=masks)
    assert calls[0] == EPOCHS  # another seed's masks differ: drawn, not replayed
    batched.train_gcn_levels(model, init, x, data, eis, keeps, seed=SEED + 1,
                             epochs=EPOCHS - 2, step_masks=masks)
    assert calls[0] == 2 * EPOCHS - 2
