import pytest
import torch
from torch import nn

from fedticket.core import MaskEnforcer, apply_mask, prune
from fedticket.models import build_model


def train_steps(model, opt, steps=5, shape=(1, 12, 12)):
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        x = torch.randn(16, *shape, generator=g)
        y = torch.randint(0, 10, (16,), generator=g)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()


@pytest.mark.parametrize("make_opt", [
    lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=5e-4),
    lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True),
    lambda p: torch.optim.Adam(p, lr=1e-2, weight_decay=1e-3),
    lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.1),
])
def test_pruned_weights_stay_zero_through_optimizer_steps(make_opt):
    model = build_model("conv4", (1, 12, 12), 10, seed=0)  # small input: same layers, less compute
    mask = prune(model, "random", 0.2, seed=1)
    opt = make_opt(model.parameters())
    # warm optimizer state *before* masking, so stale momentum would revive pruned weights
    train_steps(model, opt, steps=2)
    enforcer = MaskEnforcer(model, mask, opt)
    params = dict(model.named_parameters())
    before = {k: params[k].detach().clone() for k in mask}
    train_steps(model, opt, steps=5)
    for k, m in mask.items():
        assert (params[k][~m] == 0).all(), k
        assert not torch.equal(params[k][m], before[k][m]), f"{k} kept weights should train"
    enforcer.remove()
    train_steps(model, opt, steps=1)
    assert any((params[k][~m] != 0).any() for k, m in mask.items()), "hooks should be removed"


def test_apply_mask_zeroes_and_checks():
    model = build_model("lenet300", seed=0)
    mask = prune(model, "magnitude", 0.1)
    apply_mask(model, mask)
    p = dict(model.named_parameters())
    for k, m in mask.items():
        assert (p[k][~m] == 0).all() and (p[k][m] != 0).all()
    other = prune(build_model("conv4"), "magnitude", 0.1)
    with pytest.raises(ValueError, match="another model"):
        apply_mask(model, other)


def test_enforcer_set_mask_swaps_projection():
    model = build_model("lenet300", (1, 12, 12), seed=0)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    enf = MaskEnforcer(model, prune(model, "magnitude", 0.5), opt)
    tighter = prune(model, "magnitude", 0.1)
    enf.set_mask(tighter)
    train_steps(model, opt, steps=2)
    p = dict(model.named_parameters())
    assert sum(int((p[k] != 0).sum()) for k in tighter) <= tighter.num_kept
