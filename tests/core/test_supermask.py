import pytest
import torch
from torch import nn

from fedticket.core import Mask, SupermaskNet, prune
from fedticket.models import build_model


def setup(kind, density=0.3, model="lenet300", shape=(1, 12, 12), **kw):
    net = build_model(model, shape, 10, seed=0)
    mask = prune(net, "random", density, seed=0)
    return SupermaskNet(net, mask, kind=kind, seed=0, **kw), mask


@pytest.mark.parametrize("kind", ["sign", "binary", "bernoulli"])
def test_only_scores_train_and_pruned_stay_zero(kind):
    sm, mask = setup(kind, model="conv4")
    frozen = {k: v.clone() for k, v in sm.model.state_dict().items()}
    trainable = [n for n, p in sm.named_parameters() if p.requires_grad]
    assert trainable and all(n.startswith("scores.") for n in trainable)
    assert sm.num_kept == mask.num_kept == sm.score_vector().numel()
    opt = torch.optim.SGD([p for p in sm.parameters() if p.requires_grad], lr=0.5, momentum=0.9)
    before = sm.score_vector().clone()
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        x, y = torch.randn(8, 1, 12, 12, generator=g), torch.randint(0, 10, (8,), generator=g)
        opt.zero_grad()
        nn.functional.cross_entropy(sm(x), y).backward()
        opt.step()
    assert not torch.equal(before, sm.score_vector())  # STE delivered gradients
    for k, v in sm.model.state_dict().items():
        assert torch.equal(v, frozen[k]), f"{k} must stay frozen"
    eff = sm.effective_weights()
    for k, m in mask.items():
        assert (eff[k][~m] == 0).all()


def test_sign_mask_values_and_bits():
    sm, mask = setup("sign")
    v = sm.mask_values()
    assert set(v.unique().tolist()) <= {-1.0, 1.0}
    assert torch.equal(sm.mask_bits(), v > 0)
    eff = sm.effective_weights()
    w = dict(sm.model.named_parameters())
    for k, m in mask.items():
        assert torch.allclose(eff[k][m].abs(), w[k][m].abs())


def test_binary_bits_and_load_mask_bits():
    sm, _ = setup("binary")
    bits = torch.rand(sm.num_kept, generator=torch.Generator().manual_seed(1)) > 0.5
    sm.load_mask_bits(bits)
    assert torch.equal(sm.mask_bits(), bits)
    assert torch.equal(sm.mask_values() > 0, bits)
    with pytest.raises(ValueError, match="expected"):
        sm.load_mask_bits(bits[:-1])


def test_sign_load_bits_keeps_magnitudes():
    sm, _ = setup("sign")
    mags = sm.score_vector().abs()
    bits = torch.ones(sm.num_kept, dtype=torch.bool)
    sm.load_mask_bits(bits)
    assert torch.equal(sm.mask_bits(), bits)
    assert torch.allclose(sm.score_vector().abs(), torch.where(mags > 0, mags, torch.tensor(1e-6)))


def test_bernoulli_probabilities_and_seeded_samples():
    sm, _ = setup("bernoulli")
    p = torch.full((sm.num_kept,), 0.9)
    sm.load_probabilities(p)
    assert torch.allclose(sm.probabilities(), p, atol=1e-5)
    sm.set_sample_seed(7)
    a = sm.mask_bits()
    sm.set_sample_seed(7)
    b = sm.mask_bits()
    assert torch.equal(a, b)
    assert 0.85 < a.float().mean() < 0.95


def test_effective_state_dict_loads_into_plain_model():
    sm, mask = setup("sign", model="conv4")
    plain = build_model("conv4", (1, 12, 12), 10)
    plain.load_state_dict(sm.effective_state_dict())
    x = torch.randn(4, 1, 12, 12)
    sm.eval(), plain.eval()
    assert torch.allclose(sm(x), plain(x), atol=1e-5)


def test_supermask_bad_arguments():
    net = build_model("lenet300")
    with pytest.raises(ValueError, match="kind"):
        SupermaskNet(net, Mask.ones_like(net), kind="ternary")
    with pytest.raises(ValueError, match="another model"):
        SupermaskNet(net, Mask.ones_like(build_model("conv4")))
