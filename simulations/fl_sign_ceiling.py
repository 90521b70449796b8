"""The ceiling of the sign supermask on the Dirichlet bench (issue 10, target 1): no federation.

One "client" holds all the federation's training data (the union of the 100 clients' train
splits of ``bench_signscore.yaml``) and trains, on the same frozen SynFlow subnet, for the same
number of sample passes as the 50-round run (50 rounds x 10 clients x 2 epochs ~ 10 epochs):

* ``sign``         the SignScore client (weight_norm ticket, kaiming score magnitudes, all
                   signs +1 = the ticket, SGD on the scores: train.lr / momentum / batch);
                   evaluated as the server does, frozen weights x sign(score);
* ``sign+bias``    the same, with the (unmasked) biases trained too (what FedAvg-subnet trains
                   besides the kept weights);
* ``weights``      FedAvg-subnet's client: the kept weights themselves (+ biases) trained with
                   train.weight_lr, pruned weights held at zero.

If ``sign`` reaches ``weights`` here, the federated gap is the federation's (aggregation,
staleness, the 1-bit vote), not the representation's.

    OMP_NUM_THREADS=1 python simulations/fl_sign_ceiling.py --epochs 10
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fedticket.fl.dataset import client_tensors, test_tensors  # noqa: E402
from fedticket.fl.methods import make_method  # noqa: E402
from fedticket.fl.model import build_ticket, evaluate, make_optimizer  # noqa: E402
from fedticket.fl.run import prepare  # noqa: E402

VARIANTS = ("sign", "sign+bias", "weights")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--set", action="append", default=[], help="config override (k=v)")
    p.add_argument("--data-root", default=None)
    return p.parse_args(argv)


def all_train(cfg):
    parts = [client_tensors(cfg, cfg.data.root, i) for i in range(cfg.num_clients)]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def learner_for(variant: str, cfg, ticket):
    method = make_method(cfg, ticket)
    learner = method.learner(0)
    learner.load_global(method.initial_global())
    if variant == "sign+bias":
        net = learner.net
        biases = [p for n, p in net.model.named_parameters() if n not in ticket.mask]
        for b in biases:
            b.requires_grad_(True)
        learner.optimizer = lambda: make_optimizer(list(net.scores.parameters()) + biases,
                                                   cfg, cfg.train.lr)
    return learner


def main(argv=None) -> int:
    args = parse_args(argv)
    base = prepare(REPO / "configs" / "fl" / "bench_signscore.yaml", args.set, args.data_root)
    x, y = all_train(base)
    xt, yt = test_tensors(base, base.data.root)
    print(f"ceiling: one client, {len(y)} training images, {args.epochs} epochs, "
          f"overrides {args.set}", flush=True)
    rows = []
    for variant in [v for v in args.variants.split(",") if v]:
        if variant not in VARIANTS:
            raise SystemExit(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")
        cfg = prepare(REPO / "configs" / "fl" / "bench_signscore.yaml",
                      args.set + (["method=fedavg-subnet"] if variant == "weights" else []),
                      args.data_root)
        learner = learner_for(variant, cfg, build_ticket(cfg))
        curve, t0 = [], time.perf_counter()
        for epoch in range(1, args.epochs + 1):
            learner.train(x, y, epoch, epochs=1)
            acc, _ = evaluate(learner.eval_model(), xt, yt, cfg.eval.batch_size)
            curve.append(acc)
            print(f"  {variant} epoch {epoch}: test acc {acc:.4f} ({time.perf_counter() - t0:.0f} s)",
                  flush=True)
        rows.append((variant, curve))
    print("\n| variant | " + " | ".join(f"ep {i}" for i in range(1, args.epochs + 1))
          + " | best |\n|---" * 1 + "|---" * (args.epochs + 1) + "|")
    for variant, curve in rows:
        print(f"| {variant} | " + " | ".join(f"{a:.4f}" for a in curve) + f" | {max(curve):.4f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
