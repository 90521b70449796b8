import math

import pytest
import torch
from torch import nn

from fedticket.core import Mask, pack_bits, prunable_parameters, unpack_bits
from fedticket.models import build_model


def small_mask(seed=0):
    g = torch.Generator().manual_seed(seed)
    return Mask({"a.weight": torch.rand(7, 3, generator=g) > 0.5,
                 "b.weight": torch.rand(4, 2, 3, 3, generator=g) > 0.8,
                 "c.weight": torch.rand(1, 1, generator=g) > 2})


def test_invariants_and_density():
    m = small_mask()
    assert m.numel == 21 + 72 + 1
    assert m.num_kept == sum(int(v.sum()) for v in m.values())
    assert m.density == pytest.approx(m.num_kept / m.numel)
    assert m.sparsity == pytest.approx(1 - m.density)
    rows = m.layer_stats()
    assert [r["name"] for r in rows] == ["a.weight", "b.weight", "c.weight"]
    assert rows[2]["kept"] == 0 and rows[2]["density"] == 0
    with pytest.raises(ValueError, match="0/1"):
        Mask({"x": torch.tensor([0.0, 2.0])})
    with pytest.raises(ValueError, match="non-empty"):
        Mask({"": torch.ones(2, dtype=torch.bool)})
    with pytest.raises(ValueError, match="tensor"):
        Mask({"x": [1, 0]})
    # 0/1 floats are accepted and stored as bool
    assert Mask({"x": torch.tensor([0.0, 1.0])})["x"].dtype == torch.bool


def test_report_lists_every_layer_and_total():
    m = small_mask()
    text = m.report()
    for name in m:
        assert name in text
    assert "total" in text and f"{m.num_kept}" in text


def test_ones_like_selects_by_shape_for_any_module_type():
    model = build_model("conv4", (1, 28, 28), 10)
    m = Mask.ones_like(model)
    assert all(v.all() for v in m.values())
    assert set(m) == {n for n, p in model.named_parameters() if p.ndim >= 2}
    # a non-nn.Linear module that just owns a 2-D parameter (like PyG's Linear) is selected too
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.randn(3, 4))
            self.bias = nn.Parameter(torch.randn(3))
    assert list(Mask.ones_like(Odd())) == ["weight"]
    sel = prunable_parameters(build_model("lenet300"), include=["fc1.*"])
    assert list(sel) == ["fc1.weight", "fc1.bias"]
    sel = prunable_parameters(build_model("lenet300"), exclude=["fc3.*"])
    assert list(sel) == ["fc1.weight", "fc2.weight"]
    with pytest.raises(ValueError, match="no prunable"):
        prunable_parameters(build_model("lenet300"), include=["nothing*"])


def test_check_against_model_names_and_shapes():
    model = build_model("lenet300")
    m = Mask.ones_like(model)
    m.check(model)
    bad = Mask({"fc9.weight": torch.ones(2, 2, dtype=torch.bool)})
    with pytest.raises(ValueError, match="fc9.weight"):
        bad.check(model)
    wrong = Mask({"fc1.weight": torch.ones(300, 100, dtype=torch.bool)})
    with pytest.raises(ValueError, match=r"shape \(300, 100\).*\(300, 784\)"):
        wrong.check(model)


def test_save_load_roundtrip(tmp_path):
    m = small_mask()
    path = m.save(tmp_path / "sub" / "mask.safetensors")
    back = Mask.load(path)
    assert list(back) == list(m)
    for k in m:
        assert torch.equal(back[k], m[k])


@pytest.mark.parametrize("content", [b"", b"garbage", b"\x08\x00\x00\x00\x00\x00\x00\x00{}      "])
def test_load_corrupt_file_raises_one_valueerror(tmp_path, content):
    p = tmp_path / "bad.safetensors"
    p.write_bytes(content)
    with pytest.raises(ValueError, match="not a (valid )?fedticket mask"):
        Mask.load(p)


def test_load_foreign_safetensors_and_missing(tmp_path):
    from safetensors.torch import save_file
    p = tmp_path / "weights.safetensors"
    save_file({"w": torch.randn(3)}, str(p))
    with pytest.raises(ValueError, match="not a fedticket mask"):
        Mask.load(p)
    with pytest.raises(ValueError, match="not found"):
        Mask.load(tmp_path / "nope.safetensors")


def test_load_rejects_non_binary_values(tmp_path):
    from safetensors.torch import save_file
    p = tmp_path / "m.safetensors"
    save_file({"w": torch.tensor([0, 1, 2], dtype=torch.uint8)}, str(p),
              metadata={"format": "fedticket.mask/1"})
    with pytest.raises(ValueError, match="0/1"):
        Mask.load(p)


@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 63, 64, 65, 1000, 4097])
def test_pack_bits_exact_size_and_roundtrip(n):
    bits = torch.rand(n, generator=torch.Generator().manual_seed(n)) > 0.5
    data = pack_bits(bits)
    assert len(data) == math.ceil(n / 8)
    assert torch.equal(unpack_bits(data, n), bits)


def test_mask_pack_unpack_roundtrip_and_errors():
    m = small_mask(3)
    packed = m.pack()
    for k, v in m.items():
        assert len(packed[k]) == math.ceil(v.numel() / 8)
    back = Mask.unpack(packed, m.shapes())
    for k in m:
        assert torch.equal(back[k], m[k])
    with pytest.raises(ValueError, match="bytes"):
        Mask.unpack({**packed, "a.weight": packed["a.weight"] + b"\0"}, m.shapes())
    with pytest.raises(ValueError, match="missing"):
        Mask.unpack({"a.weight": packed["a.weight"]}, m.shapes())


def test_unpack_rejects_wrong_length_and_padding():
    with pytest.raises(ValueError, match="expected 2"):
        unpack_bits(b"\x01", 9)
    with pytest.raises(ValueError, match="padding"):
        unpack_bits(b"\xff", 3)


def test_flat_and_intersection():
    a, b = small_mask(1), small_mask(2)
    assert a.flat().numel() == a.numel
    c = a & b
    assert c.num_kept <= min(a.num_kept, b.num_kept)
    assert torch.equal(c.flat(), a.flat() & b.flat())


def test_shuffled_keeps_layer_counts_and_moves_positions():
    m = small_mask(5)
    s = m.shuffled(seed=1)
    for k in m:
        assert int(s[k].sum()) == int(m[k].sum())
    assert not torch.equal(s["b.weight"], m["b.weight"])
    assert torch.equal(s.flat(), m.shuffled(seed=1).flat())
