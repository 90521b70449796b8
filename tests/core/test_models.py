import pytest
import torch

from fedticket.models import MODEL_NAMES, build_model


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_models_forward_shapes(name, shape):
    m = build_model(name, shape, 7)
    m.eval()
    assert m(torch.randn(2, *shape)).shape == (2, 7)


def test_seed_makes_init_reproducible_without_touching_global_rng():
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = build_model("conv4", seed=5).state_dict()
    assert torch.equal(torch.get_rng_state(), state)
    b = build_model("conv4", seed=5).state_dict()
    c = build_model("conv4", seed=6).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_lenet300_shape_is_the_papers():
    m = build_model("lenet300", (1, 28, 28), 10)
    assert [tuple(p.shape) for n, p in m.named_parameters() if n.endswith("weight")] == \
        [(300, 784), (100, 300), (10, 100)]


def test_bad_model_arguments():
    with pytest.raises(ValueError, match="unknown model"):
        build_model("alexnet")
    with pytest.raises(ValueError, match="input_shape"):
        build_model("conv4", (28, 28))
    with pytest.raises(ValueError, match="too small"):
        build_model("conv6", (1, 4, 4))
