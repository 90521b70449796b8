"""The delta vote's levers of issue 10 (targets 1 and 3, this session's slice), each by its
defining property: ``signscore.delta_lr_final`` anneals the server's step on the accumulated
score from ``delta_lr`` (round 1) to the final value (last round). Synthetic tickets: no data."""

from __future__ import annotations

import pytest
import torch

from fedticket.errors import ConfigError
from fedticket.fl.config import load_fl_config
from fedticket.fl.methods import make_method
from fedticket.fl.testing import toy_ticket


def _ticket(seed=0, density=0.3):
    return toy_ticket(seed, density)


def _cfg(*over):
    return load_fl_config(None, ["method=signscore", "num_clients=4", "clients_per_round=3",
                                 "train.batch_size=8", "signscore.uplink_vote=delta", *over])


def _steps(cfg, ticket, rounds):
    """How far one fixed decoded change moves the server score in each of ``rounds``."""
    method = make_method(cfg, ticket)
    g = method.initial_global()
    u = torch.linspace(-0.02, 0.03, ticket.kept)
    out = []
    for r in rounds:
        before = method._score.clone()
        g = method.aggregate(r, [u], [1.0], g)
        out.append(float(((method._score - before) / u).median()))
    return out


def test_delta_lr_final_anneals_the_server_step_from_delta_lr_to_final_on_a_cosine():
    ticket = _ticket()
    steps = _steps(_cfg("rounds=5", "signscore.delta_lr=1.0", "signscore.delta_lr_final=0.1"),
                   ticket, [1, 2, 3, 4, 5])
    assert steps[0] == pytest.approx(1.0, rel=1e-4)
    assert steps[2] == pytest.approx(0.55, rel=1e-4)       # the cosine's middle
    assert steps[-1] == pytest.approx(0.1, rel=1e-3)
    assert all(a > b for a, b in zip(steps, steps[1:]))
    # off by default: every round steps delta_lr
    flat = _steps(_cfg("rounds=5", "signscore.delta_lr=0.7"), ticket, [1, 3, 5])
    assert flat == pytest.approx([0.7, 0.7, 0.7], rel=1e-4)
    with pytest.raises(ConfigError):
        _cfg("signscore.delta_lr_final=0")
