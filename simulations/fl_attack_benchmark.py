"""Accuracy after a fixed number of rounds against the fraction of sign-flipping clients.

Short on purpose (a 2-core machine shared with others): FashionMNIST, lenet300 at density 0.1,
10 clients, 5 a round, ``--rounds`` rounds (default 10) on a ``--train-subset`` (default 3000, 240 training
examples a client), SynFlow with 20 iterations instead of 100,
with the in-memory Grid (``run_in_process``: the real ClientApp and strategy, no engine), one
torch thread. Methods: the plain hidenseek vote, hidenseek with ``robust.kind=reputation``,
signscore, fedpm (Adam, as its bench config) and fedavg; the attack is ``attack.kind=sign_flip`` (negated floats for
fedavg). Prints one row per run, writes a CSV and docs/img/fl_attack.png.

    OMP_NUM_THREADS=1 python simulations/fl_attack_benchmark.py
"""

from __future__ import annotations

import argparse
import csv
import os
import tempfile
import time
from pathlib import Path

import torch

from fedticket.fl.config import load_fl_config
from fedticket.fl.server_app import run_in_process

REPO = Path(__file__).resolve().parents[1]
METHODS = {
    "hidenseek vote": ["method=hidenseek"],
    "hidenseek + reputation": ["method=hidenseek", "robust.kind=reputation"],
    "signscore": ["method=signscore"],
    "fedpm": ["method=fedpm", "train.optimizer=adam"],   # as configs/fl/bench_fedpm.yaml
    "fedavg": ["method=fedavg"],
}
# also available: --methods "signscore + reputation" (signscore's vote with robust.kind)
METHODS["signscore + reputation"] = ["method=signscore", "robust.kind=reputation"]
DEFAULT = ["hidenseek vote", "hidenseek + reputation", "signscore", "fedpm", "fedavg"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--train-subset", type=int, default=3000)
    ap.add_argument("--fractions", default="0,0.1,0.2,0.3,0.5")
    ap.add_argument("--kind", default="sign_flip")
    ap.add_argument("--methods", default=",".join(DEFAULT))
    ap.add_argument("--seeds", default="0,1", help="comma-separated; the plot shows their mean")
    ap.add_argument("--csv", default=str(REPO / "runs/fl_attack_benchmark.csv"))
    ap.add_argument("--png", default=str(REPO / "docs/img/fl_attack.png"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    fractions = [float(f) for f in args.fractions.split(",")]
    rows = []
    print(f"{'method':24s} {'fraction':>8s} {'seed':>4s} {'accuracy':>8s} {'seconds':>8s}")
    seeds = [int(x) for x in args.seeds.split(",")]
    for name in args.methods.split(","):
        for frac in fractions:
            for seed in seeds:
                acc, secs = one_run(name, frac, seed, args)
                rows.append({"method": name, "fraction": frac, "seed": seed, "accuracy": acc,
                             "seconds": secs})
                print(f"{name:24s} {frac:8.2f} {seed:4d} {acc:8.4f} {secs:8.1f}", flush=True)
    Path(args.csv).parent.mkdir(parents=True, exist_ok=True)
    with open(args.csv, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    plot(rows, args)


def one_run(name: str, frac: float, seed: int, args) -> tuple[float, float]:
    """(final global accuracy, seconds) of one short in-process run."""
    with tempfile.TemporaryDirectory() as out:
        cfg = load_fl_config(REPO / "configs/fl/quickstart.yaml", [
            *METHODS[name], f"rounds={args.rounds}", f"seed={seed}",
            f"data.train_subset={args.train_subset}", "data.test_subset=2000",
            "eval.personal_every=0", "model.prune_iterations=20",
            f"data.root={os.environ.get('FEDTICKET_DATA', 'data')}",
            f"attack.kind={args.kind if frac > 0 else 'none'}", f"attack.fraction={frac}",
            f"output_dir={out}"])
        t = time.perf_counter()
        summary = run_in_process(cfg, out)
        return float(summary["final_global_accuracy"]), time.perf_counter() - t


def plot(rows, args) -> None:
    import matplotlib
    matplotlib.use(os.environ.get("MPLBACKEND", "Agg"))
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name in dict.fromkeys(r["method"] for r in rows):
        fr = sorted({r["fraction"] for r in rows if r["method"] == name})
        mean = [sum(r["accuracy"] for r in rows if r["method"] == name and r["fraction"] == f)
                / sum(1 for r in rows if r["method"] == name and r["fraction"] == f) for f in fr]
        ax.plot(fr, mean, marker="o", label=name)
    ax.set_xlabel(f"fraction of {args.kind} clients")
    ax.set_ylabel(f"test accuracy after {args.rounds} rounds")
    ax.set_title(f"FashionMNIST, 10 clients (5/round), train_subset={args.train_subset}, "
                 f"mean of seeds {args.seeds}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    Path(args.png).parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(args.png, dpi=120)


if __name__ == "__main__":
    main()
