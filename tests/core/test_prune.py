
import pytest
import torch
from torch import nn

from fedticket.core import (
    Mask,
    density_schedule,
    kept_count,
    l0_project,
    mask_from_scores,
    prune,
    score,
    topk_mask_flat,
)
from fedticket.models import build_model


def fake_loader(shape=(1, 28, 28), n=64, batch=32, classes=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *shape, generator=g)
    y = torch.randint(0, classes, (n,), generator=g)
    ds = torch.utils.data.TensorDataset(x, y)
    return torch.utils.data.DataLoader(ds, batch_size=batch)


@pytest.mark.parametrize("method", ["random", "magnitude", "snip", "grasp", "synflow"])
@pytest.mark.parametrize("scope", ["global", "layer"])
def test_exact_kept_counts(method, scope):
    model = build_model("lenet300", seed=1)
    density = 0.037
    kw = {"input_shape": (1, 28, 28), "iterations": 5} if method == "synflow" else {}
    if method in ("snip", "grasp"):
        kw = {"dataloader": fake_loader(), "num_batches": 2}
    mask = prune(model, method, density, scope=scope, **kw)
    if scope == "global":
        assert mask.num_kept == round(density * mask.numel)
    else:
        for r in mask.layer_stats():
            assert r["kept"] == max(1, round(density * r["numel"])), r


def test_density_one_keeps_all_and_bad_density_rejected():
    model = build_model("lenet300")
    assert prune(model, "magnitude", 1.0).density == 1.0
    for bad in (0.0, -0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="density"):
            prune(model, "magnitude", bad)
    with pytest.raises(ValueError, match="unknown pruning method"):
        prune(model, "oracle", 0.5)
    with pytest.raises(ValueError, match="scope"):
        prune(model, "magnitude", 0.5, scope="row")


def test_ties_broken_by_index_deterministically():
    s = torch.zeros(10)
    assert topk_mask_flat(s, 3).tolist() == [True] * 3 + [False] * 7
    s = torch.tensor([1.0, 5.0, 5.0, 5.0, 0.0])
    assert topk_mask_flat(s, 2).tolist() == [False, True, True, False, False]
    assert topk_mask_flat(torch.tensor([float("nan"), 1.0]), 1).tolist() == [False, True]
    scores = {"a": torch.ones(4, 4), "b": torch.ones(3)}
    m1, m2 = mask_from_scores(scores, 0.5), mask_from_scores(scores, 0.5)
    assert torch.equal(m1.flat(), m2.flat()) and m1.num_kept == 10
    assert m1["a"].all() is not None and int(m1["a"].sum()) == 10 and int(m1["b"].sum()) == 0


def test_base_mask_entries_stay_pruned():
    scores = {"w": torch.arange(10.0)}
    base = Mask({"w": torch.tensor([True] * 5 + [False] * 5)})
    m = mask_from_scores(scores, 0.3, base=base)
    assert m["w"].tolist() == [False, False, True, True, True] + [False] * 5


def test_kept_count_at_least_one():
    assert kept_count(1e-9, 1000) == 1
    assert kept_count(0.5, 3) == 2
    assert kept_count(1.0, 7) == 7


def test_exponential_schedule():
    sch = density_schedule(0.01, 100)
    assert len(sch) == 100 and sch[-1] == pytest.approx(0.01)
    assert sch[0] == pytest.approx(0.01 ** 0.01)
    assert all(a > b for a, b in zip(sch, sch[1:]))
    assert density_schedule(0.5, 2, "linear") == [0.75, 0.5]


def test_synflow_is_data_free_deterministic_and_leaves_model_untouched():
    model = build_model("conv4", (1, 12, 12), 10, seed=3)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="data-free"):
        prune(model, "synflow", 0.1, input_shape=(1, 12, 12), dataloader=fake_loader())
    with pytest.raises(ValueError, match="input_shape"):
        prune(model, "synflow", 0.1)
    m1 = prune(model, "synflow", 0.05, input_shape=(1, 12, 12), iterations=10)
    m2 = prune(build_model("conv4", (1, 12, 12), 10, seed=3), "synflow", 0.05,
               input_shape=(1, 12, 12), iterations=10)
    assert torch.equal(m1.flat(), m2.flat())
    m3 = prune(build_model("conv4", (1, 12, 12), 10, seed=4), "synflow", 0.05,
               input_shape=(1, 12, 12), iterations=10)
    assert not torch.equal(m1.flat(), m3.flat())
    assert model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_synflow_float64_matches_float32_ranking_on_small_net():
    model = build_model("lenet300", seed=0)
    a = prune(model, "synflow", 0.1, input_shape=(1, 28, 28), iterations=3)
    b = prune(model, "synflow", 0.1, input_shape=(1, 28, 28), iterations=3, double=True)
    agree = (a.flat() == b.flat()).float().mean().item()
    assert agree > 0.999


def test_synflow_conservation_on_bias_free_linear_network():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(10, 20, bias=False), nn.ReLU(), nn.Linear(20, 30, bias=False),
                        nn.ReLU(), nn.Linear(30, 5, bias=False))
    s = score("synflow", net, input_shape=(10,), double=True)
    sums = [float(v.sum()) for v in s.values()]
    assert len(sums) == 3
    for x in sums[1:]:
        assert x == pytest.approx(sums[0], rel=1e-9)


def test_snip_grasp_need_data():
    model = build_model("lenet300")
    for m in ("snip", "grasp"):
        with pytest.raises(ValueError, match="needs data"):
            prune(model, m, 0.1)


def test_iterative_pruning_is_monotone_subset():
    model = build_model("lenet300", seed=0)
    a = prune(model, "magnitude", 0.2)
    b = prune(model, "magnitude", 0.05, base=a, iterations=3)
    assert (b.flat() & ~a.flat()).sum() == 0
    assert b.num_kept == round(0.05 * b.numel)


def test_l0_project_keeps_top_magnitudes():
    w = {"x": torch.tensor([[0.1, -3.0], [2.0, 0.0]]), "y": torch.tensor([[-0.5, 0.4]])}
    m = l0_project(w, 0.5)
    assert m.num_kept == 3
    assert m["x"].tolist() == [[False, True], [True, False]] and m["y"].tolist() == [[True, False]]


@pytest.mark.slow
def test_synflow_avoids_layer_collapse_on_vgg16_where_magnitude_collapses():
    model = build_model("vgg16", (3, 32, 32), 10, seed=0)
    syn = prune(model, "synflow", 1e-3, input_shape=(3, 32, 32))  # 100 iterations, the default
    assert syn.num_kept == round(1e-3 * syn.numel)
    assert min(r["kept"] for r in syn.layer_stats()) >= 1
    mag = prune(model, "magnitude", 1e-3)  # global magnitude at init: whole layers vanish
    collapsed = [r["name"] for r in mag.layer_stats() if r["kept"] == 0]
    assert collapsed, "expected global magnitude pruning to empty at least one layer"
