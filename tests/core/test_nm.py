import json

import pytest
import torch

from fedticket.cli import main
from fedticket.core import METHODS, is_nm, nm_mask_from_scores, parse_nm, prune
from fedticket.core.nm import semi_structured_available, semi_structured_linear
from fedticket.models import build_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_every_group_keeps_exactly_n_of_the_top_scores():
    g = torch.Generator().manual_seed(0)
    s = {"w": torch.randn(6, 3, 2, 4, generator=g)}  # conv-shaped: 24 inputs per row
    for n, m in ((2, 4), (1, 4), (3, 8), (4, 4)):
        mask = nm_mask_from_scores(s, n, m)
        assert is_nm(mask, n, m)
        groups = s["w"].reshape(-1, m)
        kept = mask["w"].reshape(-1, m)
        # the kept ones are the N largest in their group: min kept >= max dropped
        for row, keep in zip(groups, kept):
            if n < m:
                assert row[keep].min() >= row[~keep].max()
        assert mask.num_kept == s["w"].numel() * n // m


def test_ties_go_to_the_lower_index():
    mask = nm_mask_from_scores({"w": torch.ones(2, 8)}, 2, 4)
    assert mask["w"][0].tolist() == [True, True, False, False] * 2


@pytest.mark.parametrize("method", METHODS)
def test_every_scorer_produces_nm(method):
    model = build_model("lenet300", (1, 28, 28), seed=0)
    kw = {}
    if method in ("snip", "grasp"):
        g = torch.Generator().manual_seed(0)
        kw = dict(dataloader=[(torch.randn(16, 1, 28, 28, generator=g), torch.arange(16) % 10)])
    mask = prune(model, method, None, nm=(2, 4), input_shape=(1, 28, 28), **kw)
    assert is_nm(mask, 2, 4) and mask.density == 0.5


def test_nm_bad_input_names_the_layer_and_the_fix():
    model = build_model("conv4", (1, 28, 28))
    with pytest.raises(ValueError, match=r"features\.0\.weight.*not divisible by M=4.*exclude"):
        prune(model, "magnitude", None, nm=(2, 4))
    mask = prune(model, "magnitude", None, nm=(2, 4), exclude=["features.0.weight"])
    assert "features.0.weight" not in mask and is_nm(mask, 2, 4)
    with pytest.raises(ValueError, match="density 0.5"):
        prune(model, "magnitude", 0.3, nm=(2, 4), exclude=["features.0.weight"])
    for bad in ("2", "5:4", "a:b", "0:4"):
        with pytest.raises(ValueError):
            parse_nm(bad)


def test_cli_prune_nm_json_and_out(tmp_path, capsys):
    out = tmp_path / "m.safetensors"
    assert main(["prune", "--model", "lenet300", "--method", "magnitude", "--nm", "2:4",
                 "--input-shape", "1,28,28", "--json", "--out", str(out)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["nm"] == "2:4" and info["density_actual"] == 0.5
    from fedticket.core import Mask

    assert is_nm(Mask.load(out), 2, 4)
    assert main(["prune", "--model", "conv4", "--method", "magnitude", "--nm", "2:4",
                 "--input-shape", "1,28,28"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "features.0.weight" in err and "exclude" in err
    assert main(["prune", "--model", "lenet300", "--method", "magnitude"]) == 2
    assert "--density is required" in capsys.readouterr().err


def test_semi_structured_path_skips_without_cuda(capsys):
    ok, why = semi_structured_available()
    if ok:
        pytest.skip("CUDA present: the speed script measures this path")
    w = torch.randn(8, 16)
    mask = nm_mask_from_scores({"w": w.abs()}, 2, 4)["w"]
    assert semi_structured_linear(w, mask) is None
    assert "skipped" in capsys.readouterr().out and why
