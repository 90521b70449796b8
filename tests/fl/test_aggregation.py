"""Aggregation rules and the wire format, without Flower's engine."""

from __future__ import annotations

import math

import pytest
import torch

from fedticket.core import HEADER_BYTES
from fedticket.fl import wire
from fedticket.fl.methods.fedavg import weighted_mean
from fedticket.fl.methods.fedpm import beta_posterior_theta
from fedticket.fl.methods.hidenseek import weighted_majority_vote

T, F = True, False


def b(*xs):
    return torch.tensor(xs, dtype=torch.bool)


def test_majority_vote_unweighted():
    votes = [b(T, T, F, F), b(T, F, F, T), b(T, T, T, F)]
    out = weighted_majority_vote(votes, [1, 1, 1], previous=b(F, F, T, T))
    assert out.tolist() == [T, T, F, F]


def test_majority_vote_weights_decide():
    votes = [b(T, T), b(F, F), b(F, T)]
    # 10 for True outweighs 3 + 3 for False in entry 0; entry 1: 10 + 3 vs 3
    assert weighted_majority_vote(votes, [10, 3, 3], b(F, F)).tolist() == [T, T]
    assert weighted_majority_vote(votes, [1, 3, 3], b(T, F)).tolist() == [F, T]


def test_majority_vote_tie_keeps_previous():
    votes = [b(T, F, T, F), b(F, T, F, T)]
    assert weighted_majority_vote(votes, [5, 5], b(T, T, F, F)).tolist() == [T, T, F, F]
    # a weighted tie: 2 + 3 for True against 5 for False
    votes = [b(T, F), b(T, F), b(F, T)]
    assert weighted_majority_vote(votes, [2, 3, 5], b(F, T)).tolist() == [F, T]
    # float weights tie exactly too
    assert weighted_majority_vote([b(T), b(F)], [0.5, 0.5], b(F)).tolist() == [F]


def test_majority_vote_no_votes_and_bad_length():
    assert weighted_majority_vote([], [], b(T, F)).tolist() == [T, F]
    with pytest.raises(ValueError):
        weighted_majority_vote([b(T)], [1], b(T, F))


def test_weighted_mean_and_beta_posterior():
    m = weighted_mean([torch.tensor([0.0, 2.0]), torch.tensor([4.0, 2.0])], [3, 1])
    assert torch.allclose(m, torch.tensor([1.0, 2.0]))
    samples = [b(T, T, F), b(T, F, F), b(T, F, F), b(T, F, F)]
    theta = beta_posterior_theta(samples, prior=1.0, clip=0.01)
    # prior 1: posterior mode = fraction of ones, clipped away from 0 and 1
    assert torch.allclose(theta, torch.tensor([0.99, 0.25, 0.01]))
    # a stronger prior pulls towards 1/2: mode = (2 + 1 - 1) / (2 + 2 + 4 - 2)
    theta2 = beta_posterior_theta(samples, prior=2.0, clip=0.01)
    assert theta2[1].item() == pytest.approx(2 / 6)


@pytest.mark.parametrize("n", [1, 7, 8, 9, 26620])
def test_bit_payload_is_ceil_n_over_8_plus_header(n):
    bits = torch.rand(n, generator=torch.Generator().manual_seed(n)) > 0.5
    arr = wire.bits_array(bits)
    assert len(arr.data) == math.ceil(n / 8) + HEADER_BYTES == math.ceil(n / 8) + 8
    assert torch.equal(wire.decode_bits_array(arr, n), bits)


def test_payload_validation_reasons():
    bits = wire.bits_array(torch.ones(20, dtype=torch.bool))
    with pytest.raises(wire.MalformedPayload, match="expected 21"):
        wire.decode_bits_array(bits, 21)
    short = wire.raw_array(bytes(bits.data)[:-1], wire.BITS)
    with pytest.raises(wire.MalformedPayload, match="bytes"):
        wire.decode_bits_array(short, 20)
    floats = wire.floats_array(torch.tensor([1.0, float("inf"), 2.0]))
    with pytest.raises(wire.MalformedPayload, match="NaN/inf"):
        wire.decode_floats_array(floats, 3)
    with pytest.raises(wire.MalformedPayload, match="kind"):
        wire.decode_bits_array(wire.floats_array(torch.zeros(20)), 20)
    wrong_dtype = wire.Array(dtype="float32", shape=(len(bits.data),), stype=wire.BITS,
                             data=bytes(bits.data))
    with pytest.raises(wire.MalformedPayload, match="dtype"):
        wire.decode_bits_array(wrong_dtype, 20)
    assert torch.equal(wire.decode_floats_array(wire.floats_array(torch.arange(3.0)), 3),
                       torch.arange(3.0))
