"""FedPM's kept Beta priors: off = the per-round reset (numbers unchanged); on = the counts
accumulate across rounds, and the reset rule brings them back to the prior."""

from __future__ import annotations

import torch

from fedticket.fl import wire
from fedticket.fl.config import load_fl_config
from fedticket.fl.methods import make_method
from fedticket.fl.methods.fedpm import beta_posterior_theta

from .test_signscore import _ticket


def _method(*over):
    cfg = load_fl_config(None, ["method=fedpm", "num_clients=4", "clients_per_round=3", *over])
    return make_method(cfg, _ticket())


def _samples(n, k, p, seed):
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(n, generator=g) < p for _ in range(k)]


def test_default_is_the_per_round_reset():
    m = _method()
    n = m.ticket.kept
    for r, p in ((1, 0.9), (2, 0.1)):
        s = _samples(n, 3, p, r)
        out = wire.decode_floats_array(m.aggregate(r, s, [1, 1, 1], None), n)
        assert torch.equal(out, beta_posterior_theta(s, 1.0, 0.01))


def test_kept_priors_accumulate_and_reset_every_round_equals_the_default():
    n = _method().ticket.kept
    rounds = [_samples(n, 3, p, r) for r, p in ((1, 0.9), (2, 0.1), (3, 0.1))]
    keep = _method("fedpm.keep_priors=true")
    every = _method("fedpm.keep_priors=true", "fedpm.prior_reset_every=1")
    two = _method("fedpm.keep_priors=true", "fedpm.prior_reset_every=2")
    for r, s in enumerate(rounds, start=1):
        got = {name: wire.decode_floats_array(m.aggregate(r, s, [1] * 3, None), n)
               for name, m in (("keep", keep), ("every", every), ("two", two))}
        assert torch.allclose(got["every"], beta_posterior_theta(s, 1.0, 0.01))
    # after 9 samples (3 at 0.9, 6 at 0.1), the kept posterior mode is the pooled frequency
    ones = sum(x.double() for s in rounds for x in s)
    assert torch.allclose(got["keep"], (ones / 9).clamp(0.01, 0.99).float())
    # reset every 2 rounds: round 3 starts from the prior again, so it sees round 3 alone
    assert torch.allclose(got["two"], beta_posterior_theta(rounds[2], 1.0, 0.01))
    assert not torch.allclose(got["keep"], got["every"])
