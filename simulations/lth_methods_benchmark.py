"""LeNet-300-100 on FashionMNIST: IMP vs one-shot vs GraNet vs SAP vs BiP, plus essential sparsity.

    OMP_NUM_THREADS=1 python simulations/lth_methods_benchmark.py [--iterations 4000] [--levels 12]
        [--seed 0] [--data-root D] [--out runs/lth_methods.json]

Every training run uses the same trainer, data split (55k train, 5k validation held out, 10k test),
optimizer (Adam 1.2e-3, batch 60) and ``--iterations`` budget. The final density is IMP's after
``--levels`` levels of 20 %, 0.8^levels; at that density:

* ``imp``         IMP, rewinding to θ_0 each level (levels + 1 trainings);
* ``one_shot``    the trained dense net pruned once by magnitude, rewound to θ_0, trained once;
* ``granet_d2s``  GraNet dense-to-sparse in one training (cubic schedule over 10 %..70 % of the
                  run, update every 100 iterations, α = 0.5 regrowth on the cosine);
* ``granet_s2s``  GraNet sparse-to-sparse from a random 30 % mask, same schedule;
* ``bip``         BiP from the trained dense net (``--iterations`` bi-level iterations, SGD 0.01 on θ,
                  0.05 on scores; no retraining);
* ``sap``         SAP (PQI-driven rounds, p = 0.5, q = 1, γ = 1, β = 0.9, rewinding to θ_0) for as
                  many rounds as IMP has levels; it picks its own density, reported beside IMP's.

Also: essential sparsity of the trained dense net (one-shot magnitude sweep, no retraining, 1-point
tolerance, with 2:4 and 1:4 N:M) and the PQ Index of the dense and IMP weights. Seconds are wall
time on this (shared, noisy) machine, measured side by side in one run.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

from fedticket.core import (
    GraNet,
    bip_prune,
    essential_sparsity,
    iterative_magnitude_pruning,
    kept_count,
    l0_project,
    pq_report,
    prunable_parameters,
    rewind_weights,
    sap_prune_fraction,
)
from fedticket.datasets import resolve_data_root
from fedticket.lth.data import load_splits
from fedticket.lth.train import Batches, TrainSpec, accuracy, train
from fedticket.models import build_model


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--iterations", type=int, default=4000)
    ap.add_argument("--levels", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--out", default="runs/lth_methods.json")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    log = (lambda *a: None) if args.quiet else (lambda *a: print(*a, file=sys.stderr, flush=True))
    splits = load_splits("fashionmnist", resolve_data_root(args.data_root), seed=args.seed)
    spec = TrainSpec(iterations=args.iterations, eval_every=100)
    T, seed = args.iterations, args.seed
    density = 0.8 ** args.levels
    init = build_model("lenet300", splits.shape, 10, seed=seed)
    theta0 = copy.deepcopy(init.state_dict())
    out: dict = {"iterations": T, "seed": seed, "target_density": density, "methods": {}}

    def record(name, model, mask, res, seconds, **extra):
        row = {"density": mask.density if mask is not None else 1.0,
               "test_accuracy": res.test_accuracy if res else accuracy(model, splits.x_test, splits.y_test),
               "early_stop_iteration": res.early_stop_iteration if res else None,
               "seconds": seconds, **extra}
        out["methods"][name] = row
        log(f"{name:>11}: density {row['density']:.4f}  test {row['test_accuracy']:.4f}  "
            f"early stop {row['early_stop_iteration']}  {seconds:.1f}s")
        return row

    # dense
    dense = copy.deepcopy(init)
    t = time.perf_counter()
    res = train(dense, None, splits, spec, seed=seed)
    record("dense", dense, None, res, time.perf_counter() - t)
    out["pq_index_dense"] = pq_report(dense)

    # essential sparsity of the trained dense net
    t = time.perf_counter()
    ess = essential_sparsity(dense, lambda m: accuracy(m, splits.x_val, splits.y_val),
                             [0.8, 0.6, 0.5, 0.4, 0.3, 0.2, 0.15, 0.1, 0.07, 0.05, 0.03, 0.02, 0.01],
                             nm_patterns=[(2, 4), (1, 4)])
    ess["seconds"] = time.perf_counter() - t
    out["essential_sparsity"] = ess
    log(f"essential sparsity (validation, 1-point tolerance): {ess['essential_sparsity']:.3f}; "
        + ", ".join(f"{r['pattern']} drop {r['drop']:.4f}" for r in ess["nm"]))

    # IMP
    t = time.perf_counter()
    imp_model = copy.deepcopy(init)
    results = {}

    def imp_train(model, mask, level):
        results[level] = train(model, mask, splits, spec, seed=seed)
        return {}
    levels = iterative_magnitude_pruning(imp_model, imp_train, args.levels, 0.2)
    imp_mask = levels[-1].mask
    record("imp", imp_model, imp_mask, results[args.levels], time.perf_counter() - t,
           trainings=args.levels + 1)
    out["pq_index_imp"] = pq_report(imp_model, imp_mask)

    # one-shot magnitude from the trained dense net, rewound to θ_0
    t = time.perf_counter()
    mask = l0_project(prunable_parameters(dense), density)
    m = build_model("lenet300", splits.shape, 10, seed=seed)
    rewind_weights(m, theta0, mask)
    res = train(m, mask, splits, spec, seed=seed)
    record("one_shot", m, mask, res, time.perf_counter() - t + out["methods"]["dense"]["seconds"],
           trainings=2)

    # GraNet, both flavours, in one training run each
    for name, init_density in (("granet_d2s", 1.0), ("granet_s2s", max(0.3, density))):
        t = time.perf_counter()
        m = copy.deepcopy(init)
        sched = GraNet(m, density, start=int(0.1 * T), end=int(0.7 * T), every=100,
                       init_density=init_density, alpha=0.5, seed=seed)
        res = train(m, None, splits, spec, seed=seed, hook=sched)
        mask = sched.detach()
        assert mask.num_kept == kept_count(density, mask.numel)  # exact final density
        record(name, m, mask, res, time.perf_counter() - t, trainings=1,
               updates=len(sched.history),
               regrown_total=sum(h["regrown"] for h in sched.history))

    # BiP from the trained dense net
    t = time.perf_counter()
    m = copy.deepcopy(dense)
    batches = Batches(splits.x_train, splits.y_train, 60, seed + 1)
    bip = bip_prune(m, batches.next, density, iterations=T, lr_weights=0.01, lr_scores=0.05)
    acc = accuracy(m, splits.x_test, splits.y_test)
    out["methods"]["bip"] = {"density": bip.mask.density, "test_accuracy": acc,
                             "early_stop_iteration": None,
                             "seconds": time.perf_counter() - t + out["methods"]["dense"]["seconds"],
                             "bip_seconds": bip.seconds, "trainings": "dense + BiP"}
    log(f"{'bip':>11}: density {bip.mask.density:.4f}  test {acc:.4f}  {bip.seconds:.1f}s (+ dense)")

    # SAP: PQI-driven rounds with rewinding, as many rounds as IMP's levels
    t = time.perf_counter()
    sap_model = copy.deepcopy(init)
    sap_res = {}

    def sap_train(model, mask, level):
        sap_res[level] = train(model, mask, splits, spec, seed=seed)
        return {}
    sap_levels = iterative_magnitude_pruning(sap_model, sap_train, args.levels,
                                             prune_amount=sap_prune_fraction)
    out["sap_rounds"] = [{"level": lv.level, "density": lv.density,
                          "test_accuracy": sap_res[lv.level].test_accuracy} for lv in sap_levels]
    out["imp_levels"] = [{"level": lv.level, "density": lv.density,
                          "test_accuracy": results[lv.level].test_accuracy} for lv in levels]
    record("sap", sap_model, sap_levels[-1].mask, sap_res[args.levels], time.perf_counter() - t,
           trainings=args.levels + 1)

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print("| method | density | test accuracy | early-stop iteration | seconds |")
    print("|---|---|---|---|---|")
    for name, r in out["methods"].items():
        print(f"| {name} | {r['density']:.4f} | {r['test_accuracy']:.4f} | "
              f"{r['early_stop_iteration']} | {r['seconds']:.0f} |")
    print(f"essential sparsity {ess['essential_sparsity']:.3f} (validation accuracy, dense "
          f"{ess['dense_accuracy']:.4f}); N:M: "
          + ", ".join(f"{r['pattern']} {r['accuracy']:.4f}" for r in ess["nm"]))
    print("SAP rounds (density, test): " + ", ".join(
        f"{r['density']:.3f}/{r['test_accuracy']:.4f}" for r in out["sap_rounds"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
