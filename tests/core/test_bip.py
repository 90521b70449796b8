import pytest
import torch
from torch import nn
from torch.func import functional_call

from fedticket.core import bip_prune, kept_count, mask_from_scores

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _task(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2048, 32, generator=g)
    return x, (x[:, :4].sum(1) > 0).long()


def _batches(x, y, seed=1, size=128):
    g = torch.Generator().manual_seed(seed)

    def batch():
        idx = torch.randint(0, len(y), (size,), generator=g)
        return x[idx], y[idx]
    return batch


def test_one_bip_iteration_is_the_first_order_bilevel_update():
    """θ moves by SGD under the hard mask; s by θ⊙g - (1/γ)·m⊙g² on the next batch, clipped."""
    torch.manual_seed(0)
    x, y = _task()
    model = nn.Sequential(nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 2))
    ref = nn.Sequential(nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 2))
    ref.load_state_dict(model.state_dict())
    b1, b2 = _batches(x, y)(), _batches(x, y, seed=2)()
    feed = iter([b1, b2])
    density, alpha, beta, gamma = 0.3, 0.1, 0.5, 2.0
    res = bip_prune(model, lambda: next(feed), density, iterations=1, lr_weights=alpha,
                    lr_scores=beta, momentum=0.0, gamma=gamma, scope="global")
    names = ["0.weight", "2.weight"]
    p = dict(ref.named_parameters())
    top = max(float(p[n].detach().abs().max()) for n in names)
    s0 = {n: p[n].detach().abs() / top for n in names}
    m = mask_from_scores(s0, density, "global")

    def grads(batch):
        z = {n: (p[n].detach() * m[n]).requires_grad_() for n in names}
        ref.zero_grad()
        nn.functional.cross_entropy(functional_call(ref, z, (batch[0],)), batch[1]).backward()
        return {n: z[n].grad for n in names}
    g = grads(b1)
    with torch.no_grad():
        for n in names:
            p[n] -= alpha * m[n] * g[n]
        for n in ("0.bias", "2.bias"):
            p[n] -= alpha * p[n].grad
    g = grads(b2)
    s1 = {n: (s0[n] - beta * (p[n].detach() * g[n] - m[n] * g[n] ** 2 / gamma)).clamp(0, 1)
          for n in names}
    for n in names:
        assert torch.allclose(res.scores[n], s1[n], atol=1e-6)
    final = mask_from_scores(s1, density, "global")
    assert all(torch.equal(res.mask[n], final[n]) for n in names)
    got = dict(model.named_parameters())
    assert torch.allclose(got["0.weight"], p["0.weight"].detach() * final["0.weight"], atol=1e-6)


def test_bip_trains_a_sparse_net_at_exact_density():
    torch.manual_seed(0)
    x, y = _task()
    model = nn.Sequential(nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 2))
    res = bip_prune(model, _batches(x, y), 0.15, iterations=200, lr_weights=0.05, lr_scores=1.0,
                    scope="layer", log_every=50)
    for m in res.mask.values():
        assert int(m.sum()) == kept_count(0.15, m.numel())
    assert (model[0].weight[~res.mask["0.weight"]] == 0).all()
    assert all(float(s.min()) >= 0 and float(s.max()) <= 1 for s in res.scores.values())
    with torch.no_grad():
        assert (model(x).argmax(1) == y).float().mean() > 0.9
    assert len(res.history) == 4 and res.seconds > 0
