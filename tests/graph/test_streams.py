"""``rng: official``: a seed gives the TEDDY code's draws (graph/streams.py)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch_geometric.nn.dense.linear import Linear

from fedticket.errors import ConfigError
from graph import methods
from graph.config import GraphConfig, ModelConfig, SweepConfig, TrainConfig
from graph.models import GCN, build_model, normalized_adjacency
from graph.streams import official_init_
from graph.sweep import run_seed

SEED = 3846


def _teddy_code_gcn(in_dim, hidden, classes, seed):
    """The TEDDY code's two GCNConv: each a PyG Linear built (reset once) and reset again."""
    torch.manual_seed(seed)
    convs = []
    for i, o in ((in_dim, hidden), (hidden, classes)):
        lin = Linear(i, o, bias=False, weight_initializer="glorot")
        lin.reset_parameters()  # GCNConv.reset_parameters
        convs.append(lin)
    return convs


def test_gcn_weights_are_pygs_linear_draws():
    model = build_model("gcn", 30, 4, 16)
    state = official_init_(model, SEED)
    l1, l2 = _teddy_code_gcn(30, 16, 4, SEED)
    assert torch.equal(model.conv1.weight, l1.weight)
    assert torch.equal(model.conv2.weight, l2.weight)
    assert torch.equal(state, torch.get_rng_state())  # the training starts right after
    assert model.torch_dropout


def test_gin_weights_are_torch_linear_draws():
    model = build_model("gin", 30, 4, 16, dropout=0.0)
    with torch.no_grad():
        model.conv1.eps.fill_(0.3)
    official_init_(model, SEED)
    torch.manual_seed(SEED)
    c1 = torch.nn.Linear(30, 16, bias=False)
    c1.reset_parameters()  # GINConv.reset_parameters -> reset(self.lin)
    c2 = torch.nn.Linear(16, 4, bias=False)
    c2.reset_parameters()
    mlp = torch.nn.Linear(16, 4, bias=False)
    assert torch.equal(model.conv1.weight, c1.weight)
    assert torch.equal(model.conv2.weight, c2.weight)
    assert torch.equal(model.mlp, mlp.weight)
    assert float(model.conv1.eps) == 0.0


def test_gat_is_refused_before_work():
    with pytest.raises(ConfigError, match="rng: official"):
        GraphConfig(rng="official", model=ModelConfig(name="gat")).validate()
    with pytest.raises(ValueError, match="gcn, gin"):
        official_init_(build_model("gat", 6, 3, 8, heads=2), SEED)


def test_a_training_step_is_the_teddy_codes_step(graph_factory):
    """One step of the sweep's dense run with rng: official, against the TEDDY code's step written
    out with dense matrices: its weights, its F.dropout mask from the state after the init, Adam."""
    data = graph_factory(num_nodes=50, num_features=12, seed=2)
    cfg = GraphConfig(methods=["teddy"], rng="official", model=ModelConfig(hidden=16),
                      train=TrainConfig(epochs=1), sweep=SweepConfig(num_levels=1))
    seen = {}
    real = methods.train_node_classifier

    def spy(model, *a, **kw):
        seen.setdefault("rng", torch.get_rng_state())
        res = real(model, *a, **kw)
        seen.setdefault("w", (model.conv1.weight.detach().clone(), model.conv2.weight.detach().clone()))
        return res

    sched = cfg.sweep.schedule()
    methods.train_node_classifier = spy
    try:
        run_seed(cfg, data, data.x, SEED, sched, sched)
    finally:
        methods.train_node_classifier = real
    c = int(data.y.max()) + 1
    l1, l2 = _teddy_code_gcn(data.num_features, 16, c, SEED)
    assert torch.equal(seen["rng"], torch.get_rng_state())  # no re-seed between init and training
    ei, norm = normalized_adjacency(data.edge_index, None, data.num_nodes)
    a = torch.zeros(data.num_nodes, data.num_nodes).index_put_((ei[1], ei[0]), norm, accumulate=True)
    opt = torch.optim.Adam([l1.weight, l2.weight], lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    h = F.dropout(F.relu(a @ l1(data.x)), 0.5, True)
    F.cross_entropy((a @ l2(h))[data.train_mask], data.y[data.train_mask]).backward()
    opt.step()
    torch.testing.assert_close(seen["w"][0], l1.weight.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(seen["w"][1], l2.weight.detach(), rtol=1e-5, atol=1e-6)


def test_levels_stay_independent_and_use_the_level_loop(graph_factory):
    data = graph_factory(num_nodes=90, num_features=30, seed=5)

    def rows(levels):
        cfg = GraphConfig(methods=["teddy"], rng="official", model=ModelConfig(hidden=16),
                          train=TrainConfig(epochs=8), sweep=SweepConfig(num_levels=4, levels=levels))
        return {r.level: (r.best_epoch, r.val_accuracy, r.test_accuracy)
                for r in run_seed(cfg, data, data.x, SEED, cfg.sweep.schedule(), cfg.sweep.schedule())}

    every, alone = rows([1, 2, 3, 4]), rows([3])
    assert alone[3] == every[3] and alone[0] == every[0]


def test_torch_dropout_is_f_dropout():
    model = GCN(5, 64, 3, dropout=0.5)
    model.torch_dropout = True
    h = torch.rand(40, 64) + 0.1
    torch.manual_seed(1)
    from graph.models import _hidden_dropout

    got = _hidden_dropout(model, h, True)
    torch.manual_seed(1)
    assert torch.equal(got, F.dropout(h, 0.5, True))
