import pytest
import torch

from fedticket.core import HEADER_BYTES, bits_to_signs, decode_bits, encode_bits, signs_to_bits
from fedticket.core.codec import entropy_bits_per_entry


@pytest.mark.parametrize("n", [1, 13, 800, 12345])
def test_encode_decode_roundtrip_and_size(n):
    bits = torch.rand(n, generator=torch.Generator().manual_seed(n)) > 0.5
    payload = encode_bits(bits)
    assert len(payload) == HEADER_BYTES + (n + 7) // 8
    assert torch.equal(decode_bits(payload, n), bits)


def test_compression_only_when_smaller_and_lossless():
    skew = torch.zeros(80_000, dtype=torch.bool)
    skew[::50] = True
    z = encode_bits(skew, compress=True)
    assert len(z) < HEADER_BYTES + 10_000
    assert torch.equal(decode_bits(z), skew)
    rnd = torch.rand(8000, generator=torch.Generator().manual_seed(0)) > 0.5
    assert len(encode_bits(rnd, compress=True)) == HEADER_BYTES + 1000  # random bits don't compress


def test_decode_rejects_bad_payloads():
    good = encode_bits(torch.ones(16, dtype=torch.bool))
    with pytest.raises(ValueError, match="too short"):
        decode_bits(good[:3])
    with pytest.raises(ValueError, match="foreign header"):
        decode_bits(b"XX" + good[2:])
    with pytest.raises(ValueError, match="expected 17"):
        decode_bits(good, 17)
    with pytest.raises(ValueError, match="bytes"):
        decode_bits(good[:-1])


def test_sign_bit_mapping():
    s = torch.tensor([-1.0, 1.0, 0.0, -0.5])
    bits = signs_to_bits(s)
    assert bits.tolist() == [False, True, True, False]
    assert bits_to_signs(bits).tolist() == [-1.0, 1.0, 1.0, -1.0]
    assert entropy_bits_per_entry(0.5) == pytest.approx(1.0)
    assert entropy_bits_per_entry(0.0) == 0.0
