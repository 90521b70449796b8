import pytest
import torch
from torch import nn

from fedticket.core import GraNet, kept_count
from fedticket.models import build_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _train(model, sched, steps, seed=0):
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    g = torch.Generator().manual_seed(seed)
    n = sched.mask.numel
    seen = []
    for t in range(1, steps + 1):
        x = torch.randn(32, 1, 28, 28, generator=g)
        y = torch.randint(0, 10, (32,), generator=g)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        before = sched.mask.clone()
        sched(model, opt, t)
        opt.step()
        if sched.is_update(t):
            rec = sched.history[-1]
            # exact density after every update
            assert sched.mask.num_kept == kept_count(sched.density_at(t), n) == rec["kept"]
            seen.append((t, before, sched.mask.clone(), rec))
        for k, m in sched.mask.items():  # pruned weights stay zero through the step
            assert (dict(model.named_parameters())[k][~m] == 0).all()
    return seen


def test_dense_to_sparse_reaches_final_density_exactly_and_regrows():
    model = build_model("lenet300", seed=0)
    sched = GraNet(model, 0.1, start=2, end=42, every=5, alpha=0.5)
    assert sched.density_at(0) == 1.0 and sched.density_at(42) == pytest.approx(0.1)
    seen = _train(model, sched, 45)
    assert len(seen) == 9
    assert sched.mask.num_kept == kept_count(0.1, sched.mask.numel)
    # neuroregeneration: some update revives weights that were dead before it
    assert any(rec["regrown"] > 0 for *_, rec in seen)
    revived = [(~b.flat() & a.flat()).sum() for _, b, a, _ in seen]
    assert any(int(r) > 0 for r in revived)
    # the regrowth fraction decays on the cosine from alpha to 0
    fr = [rec["regrow_fraction"] for *_, rec in seen]
    assert fr[0] == pytest.approx(0.5) and fr[-1] == pytest.approx(0.0, abs=1e-12)
    assert all(a >= b for a, b in zip(fr, fr[1:]))


def test_regrowth_picks_the_largest_gradients():
    model = build_model("lenet300", seed=0)
    sched = GraNet(model, 0.5, start=1, end=10, every=1, alpha=0.3, scope="layer")
    x, y = torch.randn(16, 1, 28, 28), torch.arange(16) % 10
    nn.functional.cross_entropy(model(x), y).backward()
    before = sched.mask.clone()
    sched.update(1)
    w = dict(model.named_parameters())
    for k, m in sched.mask.items():
        grown = m & ~before[k]
        if grown.any():
            dead_after = ~m
            assert w[k].grad.abs()[grown].min() >= w[k].grad.abs()[dead_after].max() - 1e-12


def test_sparse_to_sparse_starts_at_init_density_per_layer():
    model = build_model("lenet300", seed=0)
    sched = GraNet(model, 0.05, start=1, end=21, every=4, init_density=0.3, alpha=0.2, seed=3)
    for row in sched.mask.layer_stats():
        assert row["kept"] == kept_count(0.3, row["numel"])
    _train(model, sched, 22)
    assert sched.mask.num_kept == kept_count(0.05, sched.mask.numel)


def test_bad_schedule_is_refused():
    model = build_model("lenet300")
    with pytest.raises(ValueError, match="final_density"):
        GraNet(model, 0.5, start=1, end=10, init_density=0.2)
    with pytest.raises(ValueError, match="start"):
        GraNet(model, 0.5, start=10, end=10)
