"""ℓ0-ball projected gradient descent keeps exactly k weights after every step; distillation loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fedticket.core import Mask, kept_count, prunable_parameters
from graph.models import build_model
from graph.train import distillation_loss, train_node_classifier


@pytest.mark.parametrize("model_name", ["gcn", "gat", "gin"])
@pytest.mark.parametrize("scope", ["global", "layer"])
def test_l0_projection_keeps_exactly_k_after_every_step(graph_factory, model_name, scope):
    data = graph_factory()
    torch.manual_seed(0)
    model = build_model(model_name, data.num_features, 3, hidden=16, heads=4)
    params = prunable_parameters(model)
    density = 0.3
    n_total = sum(p.numel() for p in params.values())
    seen = []

    def check(epoch, mask):
        assert isinstance(mask, Mask)
        if scope == "global":
            assert mask.num_kept == kept_count(density, n_total)
        else:
            for name, p in params.items():
                assert int(mask[name].sum()) == kept_count(density, p.numel())
        for name, p in params.items():
            assert (p.detach()[~mask[name]] == 0).all()  # pruned entries are exactly zero
        nonzero = sum(int((p.detach() != 0).sum()) for p in params.values())
        assert nonzero <= mask.num_kept
        seen.append(epoch)

    res = train_node_classifier(model, data.x, data, data.edge_index, epochs=12, lr=0.05,
                                l0_density=density, l0_scope=scope, step_callback=check)
    assert seen == list(range(12))
    assert res.mask is not None and res.mask.density == pytest.approx(
        res.mask.num_kept / n_total)


def test_l0_mask_changes_over_training(graph_factory):
    """PGD, not a fixed mask: the support can move as weights grow and shrink."""
    data = graph_factory()
    torch.manual_seed(0)
    model = build_model("gcn", data.num_features, 3, hidden=16)
    masks = []
    train_node_classifier(model, data.x, data, data.edge_index, epochs=15, lr=0.1, l0_density=0.2,
                          step_callback=lambda e, m: masks.append(m.flat().clone()))
    assert any(not torch.equal(masks[0], m) for m in masks[1:])


def test_dense_run_has_no_mask_and_learns(graph_factory):
    data = graph_factory()
    torch.manual_seed(0)
    model = build_model("gcn", data.num_features, 3, hidden=32)
    res = train_node_classifier(model, data.x, data, data.edge_index, epochs=60, lr=0.05)
    assert res.mask is None
    assert res.test_accuracy > 0.6  # block graph with informative features: well above 1/3
    assert res.logits.shape == (data.num_nodes, 3)


def test_fixed_mask_stays_fixed(graph_factory):
    data = graph_factory()
    torch.manual_seed(0)
    model = build_model("gin", data.num_features, 3, hidden=16)
    mask = Mask({n: torch.rand(p.shape) < 0.5 for n, p in prunable_parameters(model).items()})

    def check(epoch, m):
        assert m is mask
        for n, p in prunable_parameters(model).items():
            assert (p.detach()[~mask[n]] == 0).all()

    train_node_classifier(model, data.x, data, data.edge_index, epochs=5, fixed_mask=mask,
                          step_callback=check)
    with pytest.raises(ValueError, match="either"):
        train_node_classifier(model, data.x, data, data.edge_index, epochs=1, fixed_mask=mask,
                              l0_density=0.5)


def test_distillation_loss():
    t = torch.randn(50, 4)
    assert float(distillation_loss(t.clone(), t)) == pytest.approx(0.0, abs=1e-6)
    s = torch.randn(50, 4, requires_grad=True)
    kd = distillation_loss(s, t)
    want = F.kl_div(F.log_softmax(s, -1), F.softmax(t, -1), reduction="batchmean")
    assert float(kd) == pytest.approx(float(want)) and float(kd) > 0
    kd.backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    # temperature: softened distributions, scaled by T^2
    kd2 = distillation_loss(s.detach(), t, temperature=2.0)
    want2 = F.kl_div(F.log_softmax(s.detach() / 2, -1), F.softmax(t / 2, -1),
                     reduction="batchmean") * 4
    assert float(kd2) == pytest.approx(float(want2))


def test_distillation_pulls_student_to_teacher(graph_factory):
    data = graph_factory()
    torch.manual_seed(0)
    teacher = torch.randn(data.num_nodes, 3) * 3

    def agreement(lam):
        torch.manual_seed(1)
        model = build_model("gcn", data.num_features, 3, hidden=16)
        res = train_node_classifier(model, data.x, data, data.edge_index, epochs=40, lr=0.05,
                                    teacher_logits=teacher, kd_lambda=lam)
        return float((res.logits.argmax(-1) == teacher.argmax(-1)).float().mean())

    assert agreement(20.0) > agreement(0.0)
