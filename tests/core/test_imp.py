import copy

import pytest
import torch
from torch import nn

from fedticket.core import MaskEnforcer, iterative_magnitude_pruning
from fedticket.models import build_model


def make_train_fn(log, starts=None):
    def train(model, mask, level):
        if starts is not None:
            starts.append((level, {k: v.detach().clone() for k, v in model.state_dict().items()}))
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
    log, seen, starts = [], [], []
    p, L = 0.2, 4
    levels = iterative_magnitude_pruning(model, make_train_fn(log, starts), L, p, callback=seen.append)
    assert [lv.level for lv in levels] == list(range(L + 1)) == [s.level for s in seen]
    n = levels[0].mask.numel
    for lv in levels:
        assert lv.mask.num_kept == max(1, round((1 - p) ** lv.level * n))
        assert lv.metrics == {"steps": 3}
    for a, b in zip(levels, levels[1:]):
        assert (b.mask.flat() & ~a.mask.flat()).sum() == 0  # nested
    # at the start of each level every weight equals init ⊙ mask (rewinding), biases included
    assert [lv for lv, _ in starts] == list(range(L + 1))
    for (level, state), lv in zip(starts, levels):
        for k, v in state.items():
            want = init[k] * lv.mask[k] if k in lv.mask else init[k]
            assert torch.equal(v, want), (level, k)
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


def test_imp_prune_amount_sets_each_level_count():
    model = build_model("lenet300", seed=0)
    fracs = {1: 0.5, 2: 0.1, 3: 0.0}
    levels = iterative_magnitude_pruning(model, lambda *a: {}, 3,
                                         prune_amount=lambda m, mask, lv: fracs[lv])
    kept = [lv.mask.num_kept for lv in levels]
    for lv in (1, 2, 3):
        assert kept[lv] == kept[lv - 1] - int(fracs[lv] * kept[lv - 1])
    with pytest.raises(ValueError, match="prune_amount"):
        iterative_magnitude_pruning(build_model("lenet300"), lambda *a: {}, 1,
                                    prune_amount=lambda *a: 1.0)
