"""The reputation vote keeps the honest majority's signs where sign-flippers break the plain vote."""

import numpy as np
import torch

from fedticket.fl.methods.hidenseek import weighted_majority_vote
from fedticket.fl.robust import Reputation

N, CLIENTS, PER_ROUND, ROUNDS = 2000, 10, 5, 30


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
    rep = Reputation(0.7) if robust else None
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


def test_reputation_recovers_the_honest_majority_under_sign_flip():
    for fraction in (0.3, 0.4):
        plain, _, _ = run(fraction, robust=False)
        robust, rep, attackers = run(fraction, robust=True)
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


def test_reputation_costs_nothing_without_attackers():
    plain, _, _ = run(0.0, robust=False)
    robust, _, _ = run(0.0, robust=True)
    assert np.allclose(plain, 0)                 # without attackers plain == the honest vote
    assert robust.mean() >= -0.01, robust
