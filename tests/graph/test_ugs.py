"""UGS reaches the schedule's densities exactly, round after round, with nested masks."""

from __future__ import annotations

import math

import pytest
import torch

from fedticket.core import prunable_parameters
from graph.edges import num_removed, undirected_pairs
from graph.levels import make_levels
from graph.models import build_model
from graph.ugs import UGS, edge_index_for


@pytest.mark.parametrize("model_name", ["gcn", "gat", "gin"])
def test_ugs_reaches_schedule_densities(graph_factory, model_name):
    data = graph_factory(num_nodes=60)
    torch.manual_seed(0)
    model = build_model(model_name, data.num_features, 3, hidden=16, heads=4)
    init = {k: v.clone() for k, v in model.state_dict().items()}
    up = undirected_pairs(data.edge_index, data.num_nodes)
    rounds = 4
    gs = [1 - 0.95 ** k for k in range(1, rounds + 1)]
    ws = [1 - 0.8 ** k for k in range(1, rounds + 1)]
    n_w = sum(p.numel() for p in prunable_parameters(model).values())
    levels = make_levels([(k, gs[k - 1], ws[k - 1]) for k in range(1, rounds + 1)], up.num_pairs, n_w)
    ugs = UGS(model, init, data.x, data, data.edge_index, up, levels=levels, mask_epochs=4,
              lr=0.01, seed=0)
    prev_pairs, prev_mask = None, None
    for r in range(1, rounds + 1):
        rnd = ugs.run_round(r)
        assert int(rnd.pair_keep.sum()) == up.num_pairs - num_removed(gs[r - 1], up.num_pairs)
        assert rnd.weight_mask.num_kept == n_w - math.ceil(ws[r - 1] * n_w)  # TEDDY's count
        assert rnd.weight_mask.density == pytest.approx(0.8 ** r, abs=1.5 / n_w)
        if prev_pairs is not None:
            assert not (rnd.pair_keep & ~prev_pairs).any()  # nothing revived
            for name, m in rnd.weight_mask.items():
                assert not (m & ~prev_mask[name]).any()
        prev_pairs, prev_mask = rnd.pair_keep, rnd.weight_mask
        ei, keep = edge_index_for(up, data.edge_index, rnd.pair_keep)
        assert ei.size(1) == 2 * int(rnd.pair_keep.sum())  # symmetric: both directions per pair
    # the model's own parameters and keys are untouched by the soft masks
    assert set(model.state_dict()) == set(init)


def test_ugs_mask_phase_rewinds_to_init(graph_factory):
    data = graph_factory(num_nodes=45)
    torch.manual_seed(0)
    model = build_model("gcn", data.num_features, 3, hidden=8)
    init = {k: v.clone() for k, v in model.state_dict().items()}
    up = undirected_pairs(data.edge_index, data.num_nodes)
    n_w = sum(p.numel() for p in prunable_parameters(model).values())
    levels = make_levels([(1, 0.05, 0.2), (2, 0.1, 0.36)], up.num_pairs, n_w)
    ugs = UGS(model, init, data.x, data, data.edge_index, up, levels=levels, mask_epochs=3, seed=1)
    ugs.run_round(1)
    # the next round starts from θ0 again (masked): load happens inside; check by running it
    model.load_state_dict(init)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ugs.run_round(2)
    assert set(before) == set(model.state_dict())
