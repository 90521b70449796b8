import math

import pytest
import torch

from fedticket.core import iterative_magnitude_pruning, pq_index, pq_report, sap_prune_count
from fedticket.core.pqi import sap_prune_fraction
from fedticket.models import build_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_pq_index_definition_and_extremes():
    assert pq_index(torch.full((50,), 3.0)) == pytest.approx(0.0, abs=1e-12)
    d = 64
    onehot = torch.zeros(d)
    onehot[5] = 2.0
    assert pq_index(onehot) == pytest.approx(1 - d ** (1 / 2 - 1), abs=1e-12)  # the upper bound
    w = torch.randn(300, generator=torch.Generator().manual_seed(0))
    for p, q in ((1.0, 2.0), (0.5, 1.0)):
        direct = 1 - d_pow(w, p, q)
        assert pq_index(w, p, q) == pytest.approx(direct, rel=1e-9)
        assert pq_index(w.double() * 1e-6, p, q) == pytest.approx(pq_index(w, p, q), rel=1e-9)  # scale-free
    # sparser -> larger
    sparse = w.clone()
    sparse[w.abs() < 1.0] = 0
    assert pq_index(sparse) > pq_index(w)
    with pytest.raises(ValueError, match="0 < p < q"):
        pq_index(w, 2.0, 1.0)


def d_pow(w, p, q):
    x = w.double().abs()
    return len(x) ** (1 / q - 1 / p) * x.pow(p).sum() ** (1 / p) / x.pow(q).sum() ** (1 / q)


def test_pq_report_per_layer_and_overall_on_alive_weights():
    model = build_model("lenet300", seed=0)
    rep = pq_report(model)
    assert set(rep["layers"]) == {"fc1.weight", "fc2.weight", "fc3.weight"}
    allw = torch.cat([p.detach().reshape(-1) for n, p in model.named_parameters() if p.ndim > 1])
    assert rep["overall"] == pytest.approx(pq_index(allw))


def test_sap_count_follows_diao_formula():
    d, p, q, eta, gamma, beta = 10_000, 0.5, 1.0, 0.1, 1.2, 0.9
    for index in (0.05, 0.2, 0.6):
        r = d * (1 + eta) ** (-q / (q - p)) * (1 - index) ** (q * p / (q - p))
        want = math.floor(d * min(max(gamma * (1 - r / d), 0.0), beta))
        assert sap_prune_count(d, index, p, q, eta, gamma, beta) == want
    assert sap_prune_count(d, 0.99, beta=0.5) == d // 2  # capped by beta
    assert sap_prune_count(d, 0.0) == 0  # nothing to compress: nothing pruned


def test_sap_drives_imp_levels():
    model = build_model("lenet300", seed=0)
    fracs = []

    def amount(m, mask, level):
        f = sap_prune_fraction(m, mask, level)
        fracs.append(f)
        return f
    levels = iterative_magnitude_pruning(model, lambda *a: {}, 2, prune_amount=amount)
    assert all(0 < f < 0.9 for f in fracs)
    assert levels[1].mask.num_kept == levels[0].mask.num_kept - int(fracs[0] * levels[0].mask.num_kept)
