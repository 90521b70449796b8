"""Poisoned but well-formed client updates, for measuring what a vote survives.

``attack.kind`` picks the behaviour of the attacking clients, ``attack.fraction`` how many there
are; which partitions attack is a seeded draw (:func:`attackers`), so a rerun poisons the same
clients. Every poisoned reply passes the server's validation (same payload kind, same length,
finite values): a server cannot tell it from an honest one by its form.

- ``sign_flip``: 1-bit uplinks are inverted bit by bit; float uplinks are negated. A range-coded
  uplink (signscore's ``uplink_coding=entropy``) is decoded against the global signs the client
  was sent, poisoned and coded again against them: the server decodes it like any other.
- ``random``: uniform random bits; float uplinks get Gaussian values of the honest update's
  mean and standard deviation.
- ``label_flip``: the client trains on permuted labels (class c -> a seeded derangement of the
  classes) and sends its honest-looking update of that training.
- ``scale``: float uplinks only: ``global + scale * (update - global)`` (the model-replacement
  boost); 1-bit payloads cannot be scaled, so the config refuses it for them.
"""

from __future__ import annotations

import numpy as np
import torch
from flwr.app import Array

from fedticket.errors import ConfigError
from fedticket.fl import wire

KINDS = ("none", "sign_flip", "random", "label_flip", "scale")
_SALT = 0xA77AC


def attackers(cfg) -> frozenset[int]:
    """Partition ids of the attacking clients: ``round(fraction * num_clients)`` of them, drawn
    from the run seed alone (independent of sampling, so the attackers stay the same clients)."""
    if cfg.attack.kind == "none" or cfg.attack.fraction <= 0:
        return frozenset()
    k = int(round(cfg.attack.fraction * cfg.num_clients))
    rng = np.random.default_rng([cfg.seed, _SALT])
    return frozenset(int(p) for p in rng.permutation(cfg.num_clients)[:k])


def is_attacker(cfg, partition_id: int) -> bool:
    return partition_id in attackers(cfg)


def _rng(cfg, server_round: int, partition_id: int) -> torch.Generator:
    return torch.Generator().manual_seed(
        (cfg.seed * 1_000_003 + server_round * 10_007 + partition_id * 101 + _SALT) % (2**63))


def flipped_labels(cfg, y: torch.Tensor, num_classes: int = 10) -> torch.Tensor:
    """``y`` under a seeded derangement of the classes: no class keeps its own label."""
    rng = np.random.default_rng([cfg.seed, _SALT, 1])
    while True:
        perm = rng.permutation(num_classes)
        if not np.any(perm == np.arange(num_classes)):
            break
    return torch.as_tensor(perm, dtype=torch.long)[y.long()]


def poison_labels(cfg, partition_id: int, y: torch.Tensor) -> torch.Tensor:
    """The labels this client trains on (flipped only for a ``label_flip`` attacker)."""
    if cfg.attack.kind != "label_flip" or not is_attacker(cfg, partition_id):
        return y
    return flipped_labels(cfg, y)


def poison_update(cfg, method, partition_id: int, server_round: int, update: Array,
                  global_array: Array | None = None,
                  reference: torch.Tensor | None = None) -> Array:
    """The update this client sends: the honest one, or its poisoned, well-formed version."""
    kind = cfg.attack.kind
    if kind in ("none", "label_flip") or not is_attacker(cfg, partition_id):
        return update
    n = method.uplink_values
    if method.uplink_kind in (wire.BITS, wire.CODED_BITS):
        if method.uplink_kind == wire.CODED_BITS:
            # ``reference``: the global signs this client decoded (Learner.coding_reference), which
            # the server decodes the uplink against; the downlink payload itself may be coded
            # against what only this node holds, so it is not decoded a second time here
            if reference is None:
                raise ValueError("a range-coded uplink is poisoned against the client's global "
                                 "signs: pass reference=learner.coding_reference()")
            bits = wire.decode_coded_bits_array(update, n, reference)
            pack = lambda b: wire.coded_bits_array(b, reference)  # noqa: E731
        else:
            bits = wire.decode_bits_array(update, n)
            pack = wire.bits_array
        if kind == "sign_flip":
            return pack(~bits)
        if kind == "random":
            return pack(torch.rand(n, generator=_rng(cfg, server_round, partition_id)) < 0.5)
        raise ConfigError(f"attack.kind={kind!r} needs a float uplink; method={cfg.method!r} "
                          "sends bits (use sign_flip, random or label_flip)")
    if method.uplink_kind != wire.F32:
        raise ConfigError(f"attack.kind={kind!r} cannot poison the {method.uplink_kind!r} payload "
                          f"of method={cfg.method!r}")
    v = wire.decode_floats_array(update, n)
    if kind == "sign_flip":
        return wire.floats_array(-v)
    if kind == "random":
        noise = torch.randn(n, generator=_rng(cfg, server_round, partition_id))
        return wire.floats_array(v.mean() + v.std() * noise)
    g = None
    if global_array is not None and getattr(global_array, "stype", None) == wire.F32:
        try:
            g = wire.decode_floats_array(global_array, n)
        except wire.MalformedPayload:
            g = None   # the global is not in the uplink's space: scale the update itself
    scaled = v * cfg.attack.scale if g is None else g + cfg.attack.scale * (v - g)
    return wire.floats_array(scaled)

