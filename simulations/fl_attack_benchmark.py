"""Accuracy after a fixed number of rounds against the fraction of attacking clients.

Short on purpose (a 2-core machine shared with others): FashionMNIST, lenet300 at density 0.1,
10 clients, 5 a round, ``--rounds`` rounds (default 10) on a ``--train-subset`` (default 3000, 240 training
examples a client), SynFlow with 20 iterations instead of 100,
with the in-memory Grid (``run_in_process``: the real ClientApp and strategy, no engine), one
torch thread. Methods: the plain hidenseek vote and signscore, each also with
``robust.kind=reputation`` and ``robust.kind=change``, fedpm (Adam, as its bench config) and
fedavg; the attacks are ``--kind`` (comma-separated, default sign_flip and label_flip;
negated / Gaussian floats for fedavg). The attack-free run (fraction 0) is the same for every
kind and runs once. Prints one row per run, writes a CSV and docs/img/fl_attack.png (one panel
per kind). ``--set KEY=VALUE`` adds a config override to every run (e.g.
data.partition=dirichlet); binary-mask rows are ``--methods "binary-mask vote,binary-mask + change"``.

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
METHODS["signscore + reputation"] = ["method=signscore", "robust.kind=reputation"]
METHODS["hidenseek + change"] = ["method=hidenseek", "robust.kind=change"]
METHODS["signscore + change"] = ["method=signscore", "robust.kind=change"]
METHODS["binary-mask vote"] = ["method=binary-mask"]
METHODS["binary-mask + change"] = ["method=binary-mask", "robust.kind=change"]
DEFAULT = ["hidenseek vote", "hidenseek + reputation", "hidenseek + change", "signscore",
           "signscore + reputation", "signscore + change", "fedpm", "fedavg"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--train-subset", type=int, default=3000)
    ap.add_argument("--fractions", default="0,0.1,0.2,0.3,0.5")
    ap.add_argument("--kind", default="sign_flip,label_flip",
                    help="comma-separated attack.kind values, one plot panel each")
    ap.add_argument("--methods", default=",".join(DEFAULT))
    ap.add_argument("--seeds", default="0,1", help="comma-separated; the plot shows their mean")
    ap.add_argument("--csv", default=str(REPO / "runs/fl_attack_benchmark.csv"))
    ap.add_argument("--png", default=str(REPO / "docs/img/fl_attack.png"))
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="extra config override for every run (e.g. data.partition=dirichlet)")
    ap.add_argument("--plot-only", action="store_true",
                    help="redraw the PNG from the --csv of an earlier run, run nothing")
    args = ap.parse_args()
    if args.plot_only:
        with open(args.csv) as f:
            rows = [{**r, "fraction": float(r["fraction"]), "accuracy": float(r["accuracy"])}
                    for r in csv.DictReader(f)]
        plot(rows, args)
        return
    torch.set_num_threads(1)
    fractions = [float(f) for f in args.fractions.split(",")]
    rows = []
    print(f"{'kind':10s} {'method':24s} {'fraction':>8s} {'seed':>4s} {'accuracy':>8s} "
          f"{'seconds':>8s}")
    seeds = [int(x) for x in args.seeds.split(",")]
    kinds = args.kind.split(",")
    clean: dict[tuple[str, int], tuple[float, float]] = {}   # fraction 0: the same for every kind
    for kind in kinds:
        for name in args.methods.split(","):
            for frac in fractions:
                for seed in seeds:
                    if frac > 0:
                        acc, secs = one_run(name, kind, frac, seed, args)
                    else:
                        if (name, seed) not in clean:
                            clean[name, seed] = one_run(name, "none", 0.0, seed, args)
                        acc, secs = clean[name, seed]
                    rows.append({"kind": kind, "method": name, "fraction": frac, "seed": seed,
                                 "accuracy": acc, "seconds": secs})
                    print(f"{kind:10s} {name:24s} {frac:8.2f} {seed:4d} {acc:8.4f} {secs:8.1f}",
                          flush=True)
    Path(args.csv).parent.mkdir(parents=True, exist_ok=True)
    with open(args.csv, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    plot(rows, args)


def one_run(name: str, kind: str, frac: float, seed: int, args) -> tuple[float, float]:
    """(final global accuracy, seconds) of one short in-process run."""
    with tempfile.TemporaryDirectory() as out:
        cfg = load_fl_config(REPO / "configs/fl/quickstart.yaml", [
            *METHODS[name], f"rounds={args.rounds}", f"seed={seed}",
            f"data.train_subset={args.train_subset}", "data.test_subset=2000",
            "eval.personal_every=0", "model.prune_iterations=20",
            f"data.root={os.environ.get('FEDTICKET_DATA', 'data')}",
            f"attack.kind={kind if frac > 0 else 'none'}", f"attack.fraction={frac}",
            f"output_dir={out}", *args.set])
        t = time.perf_counter()
        summary = run_in_process(cfg, out)
        secs = time.perf_counter() - t
        with open(Path(out) / "rounds.csv") as f:
            short = [r["round"] for r in csv.DictReader(f)
                     if int(r["round"]) > 0 and int(r["accepted"]) < cfg.clients_per_round]
        if short:
            # an attacker whose reply errors out is a dropped client, not a survived attack
            raise SystemExit(f"{name} {kind} {frac} seed {seed}: rounds {short} accepted fewer "
                             f"than {cfg.clients_per_round} replies; the measurement is void")
        return float(summary["final_global_accuracy"]), secs


def plot(rows, args) -> None:
    import matplotlib
    matplotlib.use(os.environ.get("MPLBACKEND", "Agg"))
    import matplotlib.pyplot as plt

    kinds = list(dict.fromkeys(r["kind"] for r in rows))
    fig, axes = plt.subplots(1, len(kinds), figsize=(5 * len(kinds), 4.2), sharey=True,
                             squeeze=False)
    # one colour per method family, one line style per robust option: the panels read alike
    colour = {"hidenseek": "C0", "signscore": "C1", "fedpm": "C2", "fedavg": "C3"}
    style = {"reputation": "--", "change": ":"}
    marker = {"reputation": "s", "change": "^"}
    # equal curves (a robust option that changes nothing) would hide each other: a small
    # sideways shift per option keeps every one visible
    shift = {"reputation": -0.006, "change": 0.006}
    for ax, kind in zip(axes[0], kinds):
        for name in dict.fromkeys(r["method"] for r in rows):
            sel = [r for r in rows if r["kind"] == kind and r["method"] == name]
            fr = sorted({r["fraction"] for r in sel})
            mean = [sum(r["accuracy"] for r in sel if r["fraction"] == f)
                    / sum(1 for r in sel if r["fraction"] == f) for f in fr]
            family, _, option = name.partition(" + ")
            ax.plot([f + shift.get(option, 0.0) for f in fr], mean, marker=marker.get(option, "o"),
                    ms=5, mfc="none" if option else None, label=name,
                    color=colour.get(family.split()[0]), linestyle=style.get(option, "-"))
        ax.set_xlabel(f"fraction of {kind} clients")
        ax.set_title(f"attack.kind={kind}", fontsize=10)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(f"test accuracy after {args.rounds} rounds")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.suptitle(f"FashionMNIST, 10 clients (5/round), train_subset={args.train_subset}, "
                 f"mean of seeds {args.seeds} (curves shifted sideways a little so that equal "
                 "ones stay visible)", fontsize=9)
    Path(args.png).parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    fig.savefig(args.png, dpi=120)


if __name__ == "__main__":
    main()
