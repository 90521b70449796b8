"""The legacy message shapes Flower's SecAgg+ needs, both ways, and how a vote sums exactly.

Flower's ``SecAggPlusWorkflow`` hands the clients a legacy ``FitIns`` (``fitins.parameters`` +
``fitins.config``) and ``secaggplus_mod`` reads the train reply as a legacy ``FitRes`` (NumPy
parameters + ``num_examples``). fedticket's own protocol (:mod:`~fedticket.fl.protocol`) rides
inside: the global payload is the one FitIns tensor, the round/partition/run key and the setup
go into the FitIns config; the client turns its update back into a float vector that SecAgg+
quantizes, masks and sums. Imported by both apps; imports no server code.

**An exact integer sum** (``exact`` mode: the 1-bit methods). Flower's client multiplies the
vector by ``dq = round(n / max_weight · R) / R``, clips it to ``[-C, C]``, maps it to
``(x + C) · R / (2C)`` and rounds stochastically; the server subtracts the offsets and divides by
the summed ``q = round(n / max_weight · R)``. With ``C = 1/2`` and ``max_weight = R = 2^m`` a
bit ``b`` of a client with ``n <= R/2`` examples becomes the integer ``b·n + R/2`` with no
rounding at all (every step is a dyadic number, stochastic rounding of an integer is the integer),
and the server gets ``T/N``: ``T`` the example-weighted count of ones, ``N`` the summed examples.
``round(T/N · N)`` is ``T`` exactly (far below 2^52). fedpm counts unweighted samples: its clients
report weight 1, so ``T`` is the plain count and ``N`` the number of clients.

**Float mode** (fedavg, fedavg-subnet, ``aggregation=mean_score``): Flower's own weighted mean
with the configured ``secagg.clipping_range`` / ``quantization_range``: approximate (stochastic
rounding, up to one quantization step per entry and client).
"""

from __future__ import annotations

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.common import Code, FitIns, FitRes, Parameters, Status, ndarrays_to_parameters
from flwr.compat.common import recorddict_compat as compat

from fedticket.fl import protocol, wire

FITINS_PARAMS = "fitins.parameters"
FITINS_CONFIG = "fitins.config"
_SETUP_KEYS = ("config", "layout", "mask")
_SETUP_PREFIX = "fedticket.setup."
_SETUP_STYPE = "fedticket.setup-stype."

UNIT_WEIGHT_METHODS = ("fedpm",)   # aggregate counts samples, not examples
FLOAT_METHODS = ("fedavg", "fedavg-subnet")


def mode(cfg) -> str:
    """``exact`` (integer sum of bits) or ``float`` (Flower's quantized weighted mean)."""
    if cfg.method in FLOAT_METHODS or cfg.aggregation == "mean_score":
        return "float"
    return "exact"


def exact_range(cfg) -> int:
    """R: the power of two >= 2 · secagg.max_examples (a client's weight must stay <= R/2)."""
    return 1 << int(2 * cfg.secagg.max_examples - 1).bit_length()


def workflow_params(cfg) -> dict:
    """SecAggPlusWorkflow's quantization keywords for this run's mode (see the module doc)."""
    s = cfg.secagg
    if mode(cfg) == "exact":
        r = exact_range(cfg)
        return {"max_weight": float(r), "clipping_range": 0.5, "quantization_range": r,
                "modulus_range": int(s.modulus_range)}
    return {"max_weight": float(s.max_examples), "clipping_range": float(s.clipping_range),
            "quantization_range": int(s.quantization_range), "modulus_range": int(s.modulus_range)}


# ---- server -> client -------------------------------------------------------------------------
def to_fitins(content: RecordDict) -> FitIns:
    """fedticket's train instruction as a legacy FitIns (payload tensor + flat config)."""
    payload = content.array_records[protocol.GLOBAL][protocol.PAYLOAD]
    config = dict(content.config_records[protocol.CONFIG])
    if protocol.SETUP in content.array_records:
        for key in _SETUP_KEYS:
            arr = content.array_records[protocol.SETUP][key]
            config[_SETUP_PREFIX + key] = bytes(arr.data)
            config[_SETUP_STYPE + key] = arr.stype
    return FitIns(Parameters(tensors=[bytes(payload.data)], tensor_type=payload.stype), config)


def is_fitins(msg: Message) -> bool:
    return msg.has_content() and FITINS_CONFIG in msg.content.config_records


def from_fitins(content: RecordDict) -> RecordDict:
    """The FitIns content SecAgg+ delivered, back as fedticket's train instruction."""
    params = compat.recorddict_to_fitins(content, keep_input=True)
    if len(params.parameters.tensors) != 1:
        raise wire.MalformedPayload(f"FitIns carries {len(params.parameters.tensors)} tensors, "
                                    "expected the one global payload")
    config = dict(params.config)
    setup = {k: config.pop(_SETUP_PREFIX + k, None) for k in _SETUP_KEYS}
    stypes = {k: config.pop(_SETUP_STYPE + k, None) for k in _SETUP_KEYS}
    out = RecordDict({
        protocol.GLOBAL: wire.record(wire.raw_array(params.parameters.tensors[0],
                                                    params.parameters.tensor_type)),
        protocol.CONFIG: ConfigRecord(config)})
    if all(v is not None for v in setup.values()):
        out[protocol.SETUP] = ArrayRecord({k: wire.raw_array(setup[k], str(stypes[k]))
                                           for k in _SETUP_KEYS})
    return out


# ---- client -> server -------------------------------------------------------------------------
def fitres_content(cfg, method, reply: Message) -> RecordDict:
    """The client's fedticket reply as the legacy FitRes secaggplus_mod masks: the update as
    one float64 vector (bits as 0/1), the weight as ``num_examples``, the metrics alongside."""
    metrics = reply.content.metric_records[protocol.METRICS]
    update = method.decode_update(wire.get_array(reply.content, protocol.UPDATE, protocol.PAYLOAD))
    vector = update.double().numpy()
    n = int(metrics[protocol.NUM_EXAMPLES])
    weight = 1 if cfg.method in UNIT_WEIGHT_METHODS else n
    if mode(cfg) == "exact" and weight > exact_range(cfg) // 2:
        raise ValueError(f"this client trains on {n} examples, more than secagg.max_examples="
                         f"{cfg.secagg.max_examples}: its weighted vote would be clipped; raise "
                         "secagg.max_examples")
    fitres = FitRes(Status(Code.OK, ""), ndarrays_to_parameters([vector]), weight,
                    {k: v for k, v in metrics.items() if isinstance(v, (int, float))})
    out = compat.fitres_to_recorddict(fitres, keep_input=True)
    out.metric_records[protocol.METRICS] = metrics
    return out


# ---- the server's decoding of the sum ---------------------------------------------------------
class SumError(ValueError):
    """The unmasked sum is not what the quantization promises (the round is not aggregated)."""


def exact_tally(mean: np.ndarray, total: int) -> np.ndarray:
    """``T`` (int64) from SecAgg+'s ``T / N``: must be integers in [0, N] up to float rounding."""
    t = np.asarray(mean, dtype=np.float64) * total
    tally = np.rint(t)
    if tally.size and (np.abs(t - tally).max() > 1e-3 or tally.min() < 0 or tally.max() > total):
        raise SumError("the secure sum is not an integer count in [0, total weight]: a weight "
                       "exceeded secagg.max_examples or secagg.modulus_range is too small")
    return tally.astype(np.int64)


def pseudo_votes(tally: np.ndarray, weights: list[int]) -> tuple[list[np.ndarray], list[int]]:
    """Bit vectors and integer weights whose per-entry weighted count of ones is ``tally`` and
    whose weights sum to ``sum(weights)``: the method's own ``aggregate`` run on them gives
    what it gives on the real votes whenever it depends on the votes only through those two
    (a vote, a mean vote, a count). With unit weights: one vector per client (``p < T``), so
    a count over ``len(updates)`` (fedpm) sees the same number of samples."""
    total = int(sum(weights))
    if all(w == 1 for w in weights):
        return [tally > p for p in range(total)], [1] * total
    # weights 1, 2, ..., 2^(L-2) and r = N - (2^(L-1) - 1) >= 1 sum to N and every T in
    # [0, N] is a subset sum: T >= r takes r, and what is left (< 2^(L-1)) is binary
    top = total.bit_length() - 1
    r = total - ((1 << top) - 1)
    use_r = tally >= r
    rest = tally - np.where(use_r, r, 0)
    vecs = [((rest >> p) & 1).astype(bool) for p in range(top)] + [use_r]
    return vecs, [1 << p for p in range(top)] + [r]
