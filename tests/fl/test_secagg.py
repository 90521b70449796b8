"""server.secure_aggregation: Flower's SecAgg+ sums the votes, and a sum is the same sum.

The defining property: with the same seed, a SecAgg+ run's per-round accuracies equal the plain
run's (also when a client drops out after sharing its keys). The unit tests pin what that rests
on: Flower's own quantization arithmetic sums weighted bits exactly with the parameters
fedticket picks, and the pseudo-votes rebuilt from the sum aggregate as the real votes do.
"""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from flwr.app import MessageType
from flwr.common.secure_aggregation.ndarrays_arithmetic import (
    factor_combine,
    factor_extract,
    parameters_multiply,
)
from flwr.common.secure_aggregation.quantization import dequantize, quantize

from fedticket.errors import ConfigError
from fedticket.fl import secagg_wire
from fedticket.fl.config import load_fl_config
from fedticket.fl.methods.fedpm import beta_posterior_theta
from fedticket.fl.methods.hidenseek import weighted_majority_vote
from fedticket.fl.methods.signscore import server_step


def _votes(seed=0, k=5, n=4000):
    g = np.random.default_rng(seed)
    bits = [g.random(n) < g.uniform(0.2, 0.8) for _ in range(k)]
    weights = [int(w) for w in g.integers(1, 3000, size=k)]
    return bits, weights


def _tally(bits, weights):
    return sum(w * b.astype(np.int64) for b, w in zip(bits, weights, strict=True))


@pytest.mark.parametrize("unit", [False, True])
def test_pseudo_votes_keep_each_entrys_weighted_count_and_the_total(unit):
    bits, weights = _votes(1)
    if unit:
        weights = [1] * len(bits)
    tally = _tally(bits, weights)
    vecs, ws = secagg_wire.pseudo_votes(tally, weights)
    assert sum(ws) == sum(weights)
    np.testing.assert_array_equal(_tally(vecs, ws), tally)
    if unit:  # a count over len(updates) (fedpm) must see as many samples as there were
        assert len(vecs) == len(bits)


def test_the_methods_aggregate_the_pseudo_votes_as_the_real_votes():
    bits, weights = _votes(2)
    vecs, ws = secagg_wire.pseudo_votes(_tally(bits, weights), weights)
    real = [torch.from_numpy(b) for b in bits]
    fake = [torch.from_numpy(v) for v in vecs]
    prev = torch.from_numpy(np.random.default_rng(3).random(bits[0].size) < 0.5)
    # ties keep the previous bit: both sides must see the very same integer tally
    assert torch.equal(weighted_majority_vote(real, weights, prev),
                       weighted_majority_vote(fake, ws, prev))
    score, vel = torch.full((bits[0].size,), 0.1), torch.zeros(bits[0].size)
    a, b = server_step(score, vel, real, weights, 0.6, 0.5), server_step(score, vel, fake, ws, 0.6, 0.5)
    torch.testing.assert_close(a[0], b[0], rtol=0, atol=1e-6)   # float64 sums in another order
    unit = secagg_wire.pseudo_votes(_tally(bits, [1] * len(bits)), [1] * len(bits))[0]
    assert torch.equal(beta_posterior_theta(real, 1.0, 0.01),
                       beta_posterior_theta([torch.from_numpy(v) for v in unit], 1.0, 0.01))


def test_flowers_quantization_sums_weighted_bits_exactly(tiny):
    """secaggplus_mod's client arithmetic and SecAggPlusWorkflow's unmasking (without the masks,
    which cancel modulo modulus_range), with fedticket's exact-mode parameters."""
    cfg = tiny("server.secure_aggregation=true", "method=hidenseek")
    p = secagg_wire.workflow_params(cfg)
    r, c, mod = p["quantization_range"], p["clipping_range"], p["modulus_range"]
    bits, weights = _votes(4)
    weights[0] = cfg.secagg.max_examples   # the largest weight allowed still sums exactly
    summed = None
    for b, n in zip(bits, weights, strict=True):
        q_ratio = round(n / p["max_weight"] * r)
        vec = parameters_multiply([b.astype(np.float64)], q_ratio / r)
        # the mod adds int64 masks to the int32 quantized vector: sums are int64 from here
        vec = [v.astype(np.int64) for v in factor_combine(q_ratio, quantize(vec, c, r))]
        summed = vec if summed is None else [x + y for x, y in zip(summed, vec, strict=True)]
    summed = [x % mod for x in summed]
    q_total, rest = factor_extract(summed)
    (mean,) = dequantize(rest, c, r)
    mean = (mean - (len(bits) - 1) * c) * (r / q_total)
    np.testing.assert_array_equal(secagg_wire.exact_tally(mean, sum(weights)),
                                  _tally(bits, weights))


@pytest.mark.parametrize("overrides, words", [
    (["robust.kind=reputation"], "robust.kind=reputation needs each client's own votes"),
    (["method=signscore", "signscore.uplink_coding=entropy"], "cannot be summed"),
    (["clients_per_round=2"], "clients_per_round >= 3"),
    (["secagg.num_shares=2.5"], "whole number"),
    (["secagg.num_shares=4"], "between 3 and clients_per_round=3"),
    (["secagg.num_shares=3", "secagg.reconstruction_threshold=3"], "must be below"),
    (["secagg.modulus_range=3000000000"], "power of two"),
    (["secagg.modulus_range=262144"], "the sum would wrap"),
    (["secagg.max_examples=1000000000"], "secagg.max_examples"),
])
def test_refused_combinations_are_one_clear_line(overrides, words):
    base = ["num_clients=4", "clients_per_round=3", "server.secure_aggregation=true"]
    with pytest.raises(ConfigError) as err:
        load_fl_config(None, base + overrides)
    assert words in str(err.value) and "\n" not in str(err.value)


def _accuracies(path):
    with open(path / "rounds.csv") as f:
        return [(r["round"], r["global_accuracy"], r["missing"]) for r in csv.DictReader(f)]


@pytest.mark.slow
def test_secure_run_has_the_plain_runs_accuracies_also_with_a_dropout(tiny, tmp_path):
    """Unequal client weights (dirichlet); in round 1 one sampled client dies: in the plain run
    its training fails, in the SecAgg+ run after it shared its keys (SecAgg+ then removes its
    masks from its neighbours' shares). Same seed, same votes summed: same accuracies."""
    from fedticket.fl.client_app import app as client_app
    from fedticket.fl.memgrid import InMemoryGrid
    from fedticket.fl.server_app import run_server
    from fedticket.fl.strategy import TRAIN_SALT

    first = sorted(int(p) for p in np.random.default_rng([0, TRAIN_SALT, 1]).choice(4, 3, replace=False))
    results, summaries = {}, {}
    for secure in ("false", "true"):
        cfg = tiny("method=hidenseek", "data.partition=dirichlet", "data.min_partition_size=50",
                   "eval.personal_every=0", f"server.secure_aggregation={secure}",
                   f"output_dir={tmp_path / secure}")
        victim = 1000 + 7 * first[1]   # InMemoryGrid.for_partitions' node of that partition

        def flaky(msg, context, victim=victim):
            recs = msg.content.config_records if msg.has_content() else {}
            rec = recs.get("config") or recs.get(secagg_wire.FITINS_CONFIG)
            if (msg.metadata.dst_node_id == victim and msg.metadata.message_type == MessageType.TRAIN
                    and rec is not None and rec.get("round") == 1):
                raise RuntimeError("the node's process died")
            return client_app(msg, context)

        grid = InMemoryGrid.for_partitions(flaky, cfg.num_clients)
        summaries[secure] = run_server(grid, cfg, tmp_path / secure, quiet=True)
        results[secure] = _accuracies(tmp_path / secure)
    assert results["true"] == results["false"]
    assert results["true"][1][2] == "1"          # round 1 lost its client in both runs
    kept = summaries["true"]["kept_weights"]
    # a masked entry is an int64 on the wire: at least 64 bits per kept weight, against ~1
    assert summaries["true"]["uplink_bytes_per_client_round"] > 8 * kept
    assert summaries["false"]["uplink_bytes_per_client_round"] < kept / 8 + 64
    by_stage = summaries["true"]["secagg_bytes_per_client_round"]
    assert set(by_stage["up"]) == {"setup", "share_keys", "collect_masked_vectors", "unmask"}
    assert by_stage["up"]["collect_masked_vectors"] >= 8 * kept


def _masked(arrays, count=100):
    from flwr.app import ConfigRecord, MetricRecord, RecordDict
    from flwr.common import ndarray_to_bytes
    from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key

    return RecordDict({
        RECORD_KEY_CONFIGS: ConfigRecord({Key.MASKED_PARAMETERS: [ndarray_to_bytes(a) for a in arrays]}),
        "fitres.num_examples": MetricRecord({"num_examples": count})})


def test_a_masked_vector_that_cannot_be_summed_is_named_not_summed():
    from fedticket.fl.secagg import check_masked_reply

    good = [np.array([7]), np.arange(10, dtype=np.int64)]
    assert check_masked_reply(_masked(good), 10) is None
    assert "expected [(1,), (11,)]" in check_masked_reply(_masked(good), 11)
    assert "not integer" in check_masked_reply(_masked([good[0], np.zeros(10)]), 10)
    assert "positive integer" in check_masked_reply(_masked(good, count=0), 10)
    from flwr.app import RecordDict
    assert "not a SecAgg+ masked vector" in check_masked_reply(RecordDict(), 10)
