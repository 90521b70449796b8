import copy

import pytest
import torch
from torch import nn

from fedticket.core import MaskEnforcer, iterative_magnitude_pruning
from fedticket.models import build_model


def make_train_fn(log):
    def train(model, mask, level):
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        g = torch.Generator().manual_seed(level)
        with MaskEnforcer(model, mask, opt):
            for _ in range(3):
                x = torch.randn(32, 1, 28, 28, generator=g)
                y = torch.randint(0, 10, (32,), generator=g)
                opt.zero_grad()
                nn.functional.cross_entropy(model(x), y).backward()
                opt.step()
        log.append((level, {k: v.detach().clone() for k, v in model.state_dict().items()}))
        return {"steps": 3}
    return train


def test_imp_levels_reach_compound_density_and_rewind_to_init():
    model = build_model("lenet300", seed=0)
    init = copy.deepcopy(model.state_dict())
    log, seen = [], []
    p, L = 0.2, 4
    levels = iterative_magnitude_pruning(model, make_train_fn(log), L, p, callback=seen.append)
    assert [lv.level for lv in levels] == list(range(L + 1)) == [s.level for s in seen]
    n = levels[0].mask.numel
    for lv in levels:
        assert lv.mask.num_kept == max(1, round((1 - p) ** lv.level * n))
        assert lv.metrics == {"steps": 3}
    for a, b in zip(levels, levels[1:]):
        assert (b.mask.flat() & ~a.mask.flat()).sum() == 0  # nested
    # at the start of each level the surviving weights equal the init (rewinding)
    final = dict(model.named_parameters())
    for k, m in levels[-1].mask.items():
        assert (final[k][~m] == 0).all()
        assert not torch.equal(final[k][m], init[k][m])  # trained after rewind


def test_imp_late_rewinding_uses_rewind_point():
    model = build_model("lenet300", seed=0)
    calls = []

    def rewind_fn(m):
        with torch.no_grad():
            for prm in m.parameters():
                prm.add_(1.0)
        calls.append(1)
    anchor_holder = {}

    def train(m, mask, level):
        if level == 1:
            anchor_holder["w"] = m.fc1.weight.detach().clone()
        return {}
    base = build_model("lenet300", seed=0).fc1.weight.detach()
    levels = iterative_magnitude_pruning(model, train, 1, 0.5, rewind="fn", rewind_fn=rewind_fn)
    assert calls == [1]
    m = levels[1].mask["fc1.weight"]
    assert torch.allclose(anchor_holder["w"][m], base[m] + 1.0)


def test_imp_bad_arguments():
    model = build_model("lenet300")
    with pytest.raises(ValueError, match="prune_fraction"):
        iterative_magnitude_pruning(model, lambda *a: {}, 2, 1.2)
    with pytest.raises(ValueError, match="rewind_fn"):
        iterative_magnitude_pruning(model, lambda *a: {}, 2, 0.2, rewind="fn")
