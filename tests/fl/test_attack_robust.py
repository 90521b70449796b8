"""The reputation vote keeps the honest majority's signs where sign-flippers break the plain vote;
robust.kind=change also where label-flippers (honest-looking bits, a different target) do."""

import numpy as np
import pytest
import torch

from fedticket.fl.methods.hidenseek import weighted_majority_vote
from fedticket.fl.robust import Reputation

N, CLIENTS, PER_ROUND, ROUNDS = 2000, 10, 5, 30
CHANGE = (1.2, 1.5)   # robust.change_start / change_stop defaults


def toy_votes(rng, truth, attackers, pids, agree=0.7):
    """Honest clients vote the true sign with probability ``agree`` (noisy but informative);
    attackers send the exact inverse of such an honest vote."""
    out = []
    for p in pids:
        honest = np.where(rng.random(N) < agree, truth, ~truth)
        out.append(torch.from_numpy(~honest if p in attackers else honest))
    return out


def run(fraction, robust, seed=0):
    rng = np.random.default_rng(seed)
    truth = rng.random(N) < 0.5
    attackers = set(rng.permutation(CLIENTS)[:int(round(fraction * CLIENTS))].tolist())
    rep = (Reputation(0.7, CHANGE) if robust == "change" else Reputation(0.7)) if robust else None
    prev = torch.ones(N, dtype=torch.bool)
    correct, oracle = [], []
    for _ in range(ROUNDS):
        pids = sorted(rng.choice(CLIENTS, PER_ROUND, replace=False).tolist())
        bits = toy_votes(rng, truth, attackers, pids)
        # the ceiling: the vote of this round's honest clients alone (the same draws)
        hb = [b for p, b in zip(pids, bits) if p not in attackers]
        ideal = weighted_majority_vote(hb, [100] * len(hb), prev)
        oracle.append(float((ideal.numpy() == truth).mean()))
        w = [100] * len(pids)
        if rep is not None:
            w = rep.weights(pids, bits, w, prev)
        prev = weighted_majority_vote(bits, w, prev)
        correct.append(float((prev.numpy() == truth).mean()))
    return np.array(correct) - np.array(oracle), rep, attackers


@pytest.mark.parametrize("kind", ["reputation", "change"])
def test_reputation_recovers_the_honest_majority_under_sign_flip(kind):
    for fraction in (0.3, 0.4):
        plain, _, _ = run(fraction, robust=False)
        robust, rep, attackers = run(fraction, robust=kind)
        # (accuracy of the vote) - (accuracy of the honest clients' own vote), per round.
        # The plain vote breaks: in rounds where flippers are sampled in force, it falls far
        # below what the honest clients alone would have voted
        assert plain[5:].min() < -0.2, (fraction, plain)
        # the reputation vote stays at the honest clients' vote once it has seen the clients
        # (a client's first round, and ties the honest vote breaks by trust, cost a little)
        assert robust[5:].mean() > -0.02, (fraction, robust)
        assert robust[5:].min() > -0.15, (fraction, robust)
        assert robust[5:].mean() > plain[5:].mean() + 0.05, (fraction, robust, plain)
        assert all(rep.trust(a) == 0 for a in attackers)
        assert all(rep.trust(h) > 0.5 for h in set(range(CLIENTS)) - attackers
                   if h in rep.agreement)


@pytest.mark.parametrize("kind", ["reputation", "change"])
def test_reputation_costs_nothing_without_attackers(kind):
    plain, _, _ = run(0.0, robust=False)
    robust, _, _ = run(0.0, robust=kind)
    assert np.allclose(plain, 0)                 # without attackers plain == the honest vote
    assert robust.mean() >= -0.01, robust


# ---- label_flip: attackers that train honestly, towards a different target -------------------
# A client starts from the global signs and moves, on the entries where they differ from its own
# target, each one over with probability MOVE, plus a few noise flips. Honest clients' target is
# the truth, label-flippers' one differs from it on OTHER of the entries (their task shares
# most features with the true one, as a label derangement does). Once the global fits the truth,
# a flipper agrees with it on ~0.8 of its bits (well above chance: the reputation keeps trusting
# it) but changes ~4x the bits an honest client changes.
MOVE, NOISE, OTHER = 0.9, 0.03, 0.2


def learning_votes(rng, prev, truth, other, attackers, pids):
    out = []
    for p in pids:
        target = other if p in attackers else truth
        move = (prev != target) & (rng.random(N) < MOVE)
        noise = rng.random(N) < NOISE
        out.append(torch.from_numpy(np.where(move, target, prev) ^ noise))
    return out


def run_label_flip(fraction, robust, seed=0):
    rng = np.random.default_rng(seed)
    truth = rng.random(N) < 0.5
    other = np.where(rng.random(N) < OTHER, ~truth, truth)
    attackers = set(rng.permutation(CLIENTS)[:int(round(fraction * CLIENTS))].tolist())
    rep = {"none": None, "reputation": Reputation(0.7), "change": Reputation(0.7, CHANGE)}[robust]
    prev = torch.ones(N, dtype=torch.bool)
    gap = []
    for _ in range(ROUNDS):
        pids = sorted(rng.choice(CLIENTS, PER_ROUND, replace=False).tolist())
        bits = learning_votes(rng, prev.numpy(), truth, other, attackers, pids)
        hb = [b for p, b in zip(pids, bits) if p not in attackers]
        ideal = weighted_majority_vote(hb, [100] * len(hb), prev)
        w = [100] * len(pids)
        if rep is not None:
            w = rep.weights(pids, bits, w, prev)
        prev = weighted_majority_vote(bits, w, prev)
        gap.append(float((prev.numpy() == truth).mean() - (ideal.numpy() == truth).mean()))
    return np.array(gap), rep, attackers


def test_change_ratio_catches_label_flippers_that_the_reputation_trusts():
    for fraction in (0.3, 0.4):
        plain, _, _ = run_label_flip(fraction, "none")
        rep_gap, rep, attackers = run_label_flip(fraction, "reputation")
        change_gap, change, _ = run_label_flip(fraction, "change")
        # in rounds where flippers are the sample's majority they pull the vote to their target
        assert plain[5:].min() < -0.1, (fraction, plain)
        # their bits agree with the global far above chance: the agreement alone trusts them...
        assert all(rep.trust(a) == 1 for a in attackers), rep.agreement
        assert rep_gap[5:].min() < -0.1, (fraction, rep_gap)
        # ...but they change more bits than the round's median client: no weight, and the vote
        # stays at the honest clients' own vote
        assert all(change.trust(a) == 0 for a in attackers), change.change
        assert change_gap[5:].mean() > -0.01, (fraction, change_gap)
        assert change_gap[5:].min() > -0.05, (fraction, change_gap)
        assert all(change.trust(h) == 1 for h in set(range(CLIENTS)) - attackers
                   if h in change.change)


def test_change_ratio_costs_nothing_without_label_flippers():
    plain, _, _ = run_label_flip(0.0, "none")
    change, rep, _ = run_label_flip(0.0, "change")
    assert np.allclose(plain, 0)
    assert change.mean() >= -0.005, change
    assert all(rep.trust(c) > 0.5 for c in rep.change)


def test_change_ratio_median_ignores_clients_already_distrusted():
    """A sample holding a majority of known movers: the reference is the trusted clients' change,
    so the movers stay out (a plain median would make their change the norm)."""
    rep = Reputation(0.0, CHANGE)
    prev = torch.zeros(N, dtype=torch.bool)
    small = torch.zeros(N, dtype=torch.bool)
    small[:50] = True
    big = torch.zeros(N, dtype=torch.bool)
    big[:400] = True
    rep.weights([0, 1, 2, 3, 4], [small, small, small, big, big], [1] * 5, prev)
    assert [rep.trust(c) for c in range(5)] == [1, 1, 1, 0, 0]
    w = rep.weights([0, 3, 4], [small, big, big], [1] * 3, prev)
    assert w == [1.0, 0.0, 0.0]


def test_change_state_round_trips():
    _, rep, _ = run_label_flip(0.3, "change")
    state = rep.state(CLIENTS)
    assert set(state) == {"agreement", "change"}
    back = Reputation(0.7, CHANGE)
    back.load_state(state)
    assert back.change == rep.change and back.agreement == rep.agreement
    assert set(Reputation(0.7).state(CLIENTS)) == {"agreement"}   # reputation's layout unchanged


def test_change_config_errors():
    from fedticket.errors import ConfigError
    from fedticket.fl.config import load_fl_config

    def cfg(*kv):
        return load_fl_config(None, ["method=hidenseek", "robust.kind=change", *kv])

    assert cfg().robust.change_start < cfg().robust.change_stop
    with pytest.raises(ConfigError, match="robust.change_stop=1.1 must exceed"):
        cfg("robust.change_stop=1.1")
    with pytest.raises(ConfigError, match="robust.kind='change' applies to the vote"):
        cfg("method=fedavg")
    with pytest.raises(ConfigError, match="robust.kind=change needs each client's own votes"):
        cfg("server.secure_aggregation=true")


@pytest.mark.slow
def test_change_vote_runs_in_process_and_checkpoints_its_ratios(tiny, tmp_path):
    """The real ClientApp and strategy with label-flippers: every reply is accepted (it is the
    vote weights, not a dropped client, that differ) and the running change ratios of the
    sampled clients are in the server checkpoint."""
    import csv

    from fedticket.fl import checkpoint
    from fedticket.fl.server_app import run_in_process

    out = tmp_path / "run"
    cfg = tiny("method=hidenseek", "robust.kind=change", "attack.kind=label_flip",
               "attack.fraction=0.25", "rounds=3", "eval.personal_every=0", f"output_dir={out}")
    run_in_process(cfg, out)
    with open(out / "rounds.csv") as f:
        rows = [r for r in csv.DictReader(f) if int(r["round"]) > 0]
    assert [int(r["accepted"]) for r in rows] == [cfg.clients_per_round] * 3
    state = checkpoint.load(out / checkpoint.FILENAME).method_state
    assert set(state) == {"reputation.agreement", "reputation.change"}
    ratios = state["reputation.change"]
    seen = ~ratios.isnan()
    assert seen.sum() >= cfg.clients_per_round and bool((ratios[seen] > 0).all())
    # the median client of a round has ratio 1: the running ratios sit around it
    assert float(ratios[seen].min()) <= 1.0 <= float(ratios[seen].max()) + 1e-9
