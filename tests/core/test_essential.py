import pytest
import torch
from torch import nn

from fedticket.core import essential_sparsity, sharp_drop_point

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_sharp_drop_point_is_the_last_level_before_the_first_big_drop():
    sweep = [{"sparsity": s, "accuracy": a} for s, a in
             ((0.5, 0.90), (0.7, 0.895), (0.8, 0.87), (0.9, 0.899), (0.95, 0.5))]
    assert sharp_drop_point(0.9, sweep, 0.01)["sparsity"] == 0.7  # 0.9's recovery does not count
    assert sharp_drop_point(0.9, sweep, 0.05)["sparsity"] == 0.9
    assert sharp_drop_point(0.99, sweep, 0.01) is None


def test_essential_sparsity_sweeps_a_trained_model_without_touching_it():
    torch.manual_seed(0)
    x = torch.randn(1024, 16)
    y = (x[:, 0] - x[:, 1] > 0).long()
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 2))
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(200):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    before = {k: v.clone() for k, v in model.state_dict().items()}

    def evaluate(m):
        with torch.no_grad():
            return float((m(x).argmax(1) == y).float().mean())
    res = essential_sparsity(model, evaluate, [0.9, 0.5, 0.2, 0.05, 0.01], nm_patterns=[(2, 4)])
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert [r["density"] for r in res["sweep"]] == sorted((r["density"] for r in res["sweep"]),
                                                          reverse=True)
    point = res["essential_point"]
    assert point is not None and res["dense_accuracy"] - point["accuracy"] < 0.01
    # the next sparser level is the first one over the tolerance
    nxt = [r for r in res["sweep"] if r["sparsity"] > point["sparsity"]]
    if nxt:
        assert res["dense_accuracy"] - nxt[0]["accuracy"] >= 0.01
    assert res["sweep"][-1]["accuracy"] < res["dense_accuracy"]  # 1 % of weights: it does drop
    assert res["nm"][0]["pattern"] == "2:4" and res["nm"][0]["density"] == 0.5
