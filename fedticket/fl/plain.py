"""The same clients and aggregation as the Flower run, in a plain in-process PyTorch loop.

This is a measuring stick, not a second pipeline: it calls the very learners and strategy
aggregation the ClientApp and ServerApp use, but hands payloads over in memory instead of through
Flower's simulation engine. The benchmark compares per-round wall time of the two to report the
engine's overhead (Ray scheduling, message serialisation, polling).
"""

from __future__ import annotations

import time

import torch

from fedticket.core import Mask
from fedticket.fl.config import FLConfig
from fedticket.fl.dataset import client_tensors, test_tensors
from fedticket.fl.learners import make_learner
from fedticket.fl.model import build_ticket, build_weights, evaluate
from fedticket.fl.strategy import make_strategy


def run_plain(cfg: FLConfig, rounds: int | None = None, evaluate_every: int = 0) -> dict:
    """Run ``rounds`` rounds in-process; returns per-round wall seconds and accuracies."""
    rounds = cfg.rounds if rounds is None else rounds
    torch.manual_seed(cfg.seed)
    if cfg.sim.torch_threads:
        torch.set_num_threads(cfg.sim.torch_threads)
    mask = Mask.ones_like(build_weights(cfg)) if cfg.method == "fedavg" else None
    ticket = build_ticket(cfg, mask)
    strategy = make_strategy(cfg, ticket, {p: p for p in range(cfg.num_clients)})
    current = strategy.initial_global()
    root = cfg.data.root
    x_test, y_test = test_tensors(cfg, root)
    # load every sampled client's data before timing, as warm Ray workers have it cached
    local: dict[int, torch.Tensor | None] = {}
    round_seconds, accs, train_seconds = [], [], []
    for r in range(1, rounds + 1):
        pids = strategy.sample(r, cfg.clients_per_round, salt=11)
        for p in pids:
            client_tensors(cfg, root, p)
        t0 = time.perf_counter()
        updates, weights, tsec = [], [], 0.0
        for p in pids:
            learner = make_learner(cfg, ticket, p, local.get(p))
            learner.load_global(current)
            x, y, _, _ = client_tensors(cfg, root, p)
            t1 = time.perf_counter()
            learner.train(x, y, r)
            tsec += time.perf_counter() - t1
            updates.append(strategy.decode_update(learner.update(r)))
            weights.append(len(y))
            local[p] = learner.local_state()
        current = strategy.aggregate(r, updates, weights, current)
        round_seconds.append(time.perf_counter() - t0)
        train_seconds.append(tsec)
        if evaluate_every and (r % evaluate_every == 0 or r == rounds):
            accs.append((r, evaluate(strategy.eval_model(current, r), x_test, y_test,
                                     cfg.eval.batch_size)[0]))
    return {"round_seconds": round_seconds, "train_seconds": train_seconds, "accuracy": accs}
