"""Each attack's defining property, on the payloads the server really decodes."""

from types import SimpleNamespace

import pytest
import torch

from fedticket.errors import ConfigError
from fedticket.fl import attack, wire
from fedticket.fl.config import load_fl_config

N = 4000


def cfg_of(**kv):
    return load_fl_config(None, [f"{k}={v}" for k, v in kv.items()])


def method(kind):
    return SimpleNamespace(uplink_kind=kind, uplink_values=N)


def first_attacker(cfg):
    return min(attack.attackers(cfg))


def honest(cfg):
    return min(set(range(cfg.num_clients)) - attack.attackers(cfg))


def test_attackers_are_seeded_and_sized():
    a = cfg_of(**{"attack.kind": "sign_flip", "attack.fraction": 0.3, "num_clients": 20})
    assert len(attack.attackers(a)) == 6
    assert attack.attackers(a) == attack.attackers(a)
    b = cfg_of(**{"attack.kind": "sign_flip", "attack.fraction": 0.3, "num_clients": 20, "seed": 1})
    assert attack.attackers(a) != attack.attackers(b)
    assert not attack.attackers(cfg_of(**{"attack.fraction": 0.5}))   # kind none: nobody


def test_sign_flip_inverts_every_bit_and_honest_clients_untouched():
    cfg = cfg_of(**{"attack.kind": "sign_flip", "attack.fraction": 0.3})
    bits = torch.rand(N) < 0.7
    up = wire.bits_array(bits)
    out = wire.decode_bits_array(attack.poison_update(cfg, method(wire.BITS), first_attacker(cfg), 1, up), N)
    assert torch.equal(out, ~bits)
    same = attack.poison_update(cfg, method(wire.BITS), honest(cfg), 1, up)
    assert torch.equal(wire.decode_bits_array(same, N), bits)
    v = torch.randn(N)
    neg = attack.poison_update(cfg, method(wire.F32), first_attacker(cfg), 1, wire.floats_array(v))
    assert torch.equal(wire.decode_floats_array(neg, N), -v)


def test_sign_flip_and_random_poison_a_range_coded_uplink():
    """signscore.uplink_coding=entropy: the poisoned payload is coded against the same global
    signs, so the server decodes it (before, the attacker's client errored and simply dropped
    out of the round, which looked like a vote that survives the attack)."""
    g = torch.rand(N) < 0.8                              # the global signs the client decoded
    sent = g
    coded = SimpleNamespace(uplink_kind=wire.CODED_BITS, uplink_values=N)
    bits = torch.where(torch.rand(N) < 0.05, ~g, g)      # an honest update: few flips
    up = wire.coded_bits_array(bits, g)
    for kind in ("sign_flip", "random"):
        cfg = cfg_of(**{"method": "signscore", "attack.kind": kind, "attack.fraction": 0.3})
        out = attack.poison_update(cfg, coded, first_attacker(cfg), 1, up, reference=sent)
        assert out.stype == wire.CODED_BITS
        got = wire.decode_coded_bits_array(out, N, g)
        if kind == "sign_flip":
            assert torch.equal(got, ~bits)
        else:
            assert abs(got.float().mean().item() - 0.5) < 0.05
        assert attack.poison_update(cfg, coded, honest(cfg), 1, up, reference=sent) is up


def test_random_bits_are_uniform_and_independent_of_the_update():
    cfg = cfg_of(**{"attack.kind": "random", "attack.fraction": 0.3})
    pid = first_attacker(cfg)
    a = wire.decode_bits_array(attack.poison_update(
        cfg, method(wire.BITS), pid, 2, wire.bits_array(torch.ones(N, dtype=torch.bool))), N)
    b = wire.decode_bits_array(attack.poison_update(
        cfg, method(wire.BITS), pid, 2, wire.bits_array(torch.zeros(N, dtype=torch.bool))), N)
    assert torch.equal(a, b)                        # the honest update leaves no trace
    assert abs(a.float().mean().item() - 0.5) < 0.05
    c = wire.decode_bits_array(attack.poison_update(
        cfg, method(wire.BITS), pid, 3, wire.bits_array(torch.ones(N, dtype=torch.bool))), N)
    assert not torch.equal(a, c)                    # fresh draws every round


def test_label_flip_is_a_derangement_and_only_for_attackers():
    cfg = cfg_of(**{"attack.kind": "label_flip", "attack.fraction": 0.3})
    y = torch.arange(10).repeat(5)
    flipped = attack.poison_labels(cfg, first_attacker(cfg), y)
    assert torch.all(flipped != y)
    assert sorted(flipped[:10].tolist()) == list(range(10))      # a permutation of the classes
    assert torch.equal(attack.poison_labels(cfg, honest(cfg), y), y)
    bits = wire.bits_array(torch.rand(N) < 0.5)                  # the update itself is honest
    assert attack.poison_update(cfg, method(wire.BITS), first_attacker(cfg), 1, bits) is bits


def test_scale_boosts_the_delta_from_the_global():
    cfg = cfg_of(**{"method": "fedavg", "attack.kind": "scale", "attack.fraction": 0.3,
                    "attack.scale": 5})
    g, v = torch.randn(N), torch.randn(N)
    out = attack.poison_update(cfg, method(wire.F32), first_attacker(cfg), 1,
                               wire.floats_array(v), wire.floats_array(g))
    assert torch.allclose(wire.decode_floats_array(out, N), g + 5 * (v - g), atol=1e-5)


def test_scale_on_a_bit_uplink_is_a_config_error():
    with pytest.raises(ConfigError, match="attack.kind=scale"):
        cfg_of(**{"method": "hidenseek", "attack.kind": "scale", "attack.fraction": 0.3})
    with pytest.raises(ConfigError, match="robust.kind"):
        cfg_of(**{"method": "fedavg", "robust.kind": "reputation"})
    with pytest.raises(ConfigError):
        cfg_of(**{"attack.fraction": 1.5})


def test_poisoned_replies_pass_the_server_and_change_the_run(tiny, tmp_path):
    """Through the real ClientApp and strategy: every poisoned reply is well-formed (accepted),
    and it changes the global model; the reputation vote runs on the same replies."""
    import csv

    from fedticket.fl.server_app import run_in_process

    def rows(name, *extra):
        run_in_process(tiny("method=hidenseek", "rounds=1", f"output_dir={tmp_path / name}",
                            *extra), tmp_path / name)
        with open(tmp_path / name / "rounds.csv") as f:
            return [r for r in csv.DictReader(f) if int(r["round"]) > 0]

    honest = rows("honest")
    flip = "attack.kind=sign_flip", "attack.fraction=1"
    for name, extra in {"flip": flip, "flip-robust": (*flip, "robust.kind=reputation"),
                        "label": ("attack.kind=label_flip", "attack.fraction=1")}.items():
        got = rows(name, *extra)
        assert [int(r["rejected"]) for r in got] == [0]
        assert [int(r["accepted"]) for r in got] == [int(r["accepted"]) for r in honest]
        assert got[0]["global_accuracy"] != honest[0]["global_accuracy"], name


def test_sign_flip_on_coded_signscore_with_a_held_downlink_is_accepted_every_round(tiny, tmp_path):
    """The quickstart's SignScore: uplink range-coded, downlink coded per node against the global
    it holds. From round 2 a sampled node's downlink is coded against what only it holds, so the
    attacker must poison against the signs it decoded, not decode the payload a second time
    (it then raised, and the attacker silently dropped out of the round)."""
    import csv

    from fedticket.fl.server_app import run_in_process

    out = tmp_path / "coded"
    run_in_process(tiny("method=signscore", "rounds=3", "clients_per_round=4",
                        "signscore.uplink_coding=entropy", "signscore.downlink_coding=entropy",
                        "signscore.downlink_reference=held", "attack.kind=sign_flip",
                        "attack.fraction=0.5", f"output_dir={out}"), out)
    with open(out / "rounds.csv") as f:
        got = [r for r in csv.DictReader(f) if int(r["round"]) > 0]
    assert [(int(r["accepted"]), int(r["rejected"])) for r in got] == [(4, 0)] * 3


def test_label_flip_is_refused_for_the_graph_task():
    from fedticket.fl.config import FLConfig

    cfg = FLConfig()
    cfg.task = "graph"
    cfg.attack.kind = "label_flip"
    cfg.attack.fraction = 0.2
    with pytest.raises(ConfigError, match="label_flip is implemented for task=vision"):
        cfg.validate()
