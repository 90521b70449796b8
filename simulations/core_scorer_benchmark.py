"""Time and peak memory of each pruning scorer on vgg16 and resnet18 at density 0.01.

Each (model, method) runs in its own subprocess so its peak RSS (ru_maxrss) is its own; the
baseline RSS of a process that only built the model is printed too, so the scorer's own
footprint is the difference. SNIP / GraSP score one batch of 128 random CIFAR-shaped inputs:
their cost does not depend on the pixel values, and CIFAR-10 is not available offline here.

    python simulations/core_scorer_benchmark.py                # all, markdown table
    python simulations/core_scorer_benchmark.py --models vgg16 --methods synflow --double
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time


def one(model_name: str, method: str, density: float, double: bool, iterations: int | None) -> dict:
    import torch

    from fedticket.core import prune
    from fedticket.models import build_model

    torch.manual_seed(0)
    model = build_model(model_name, (3, 32, 32), 10, seed=0)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kw = {}
    if method in ("snip", "grasp"):
        g = torch.Generator().manual_seed(0)
        ds = torch.utils.data.TensorDataset(torch.randn(128, 3, 32, 32, generator=g),
                                            torch.randint(0, 10, (128,), generator=g))
        kw = {"dataloader": torch.utils.data.DataLoader(ds, batch_size=128), "num_batches": 1}
    if method == "synflow":
        kw = {"input_shape": (3, 32, 32), "double": double}
    t = time.perf_counter()
    mask = prune(model, method, density, iterations=iterations, **kw)
    secs = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"model": model_name, "method": method + ("-f64" if double and method == "synflow" else ""),
            "iterations": iterations or (100 if method == "synflow" else 1), "seconds": secs,
            "peak_rss_mb": peak / 1024, "model_rss_mb": base_rss / 1024,
            "density": mask.density, "min_layer_kept": min(r["kept"] for r in mask.layer_stats()),
            "empty_layers": [r["name"] for r in mask.layer_stats() if r["kept"] == 0],
            "threads": torch.get_num_threads()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="vgg16,resnet18")
    ap.add_argument("--methods", default="random,magnitude,snip,grasp,synflow")
    ap.add_argument("--density", type=float, default=0.01)
    ap.add_argument("--double", action="store_true", help="also run SynFlow in float64")
    ap.add_argument("--iterations", type=int, default=None)
    ap.add_argument("--json-out", default=None)
    ap.add_argument("--_one", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._one:
        m, meth, dbl = args._one
        print(json.dumps(one(m, meth, args.density, dbl == "1", args.iterations)))
        return
    rows = []
    jobs = [(m, meth, "0") for m in args.models.split(",") for meth in args.methods.split(",")]
    if args.double:
        jobs += [(m, "synflow", "1") for m in args.models.split(",")]
    for m, meth, dbl in jobs:
        cmd = [sys.executable, __file__, "--density", str(args.density), "--_one", m, meth, dbl]
        if args.iterations:
            cmd += ["--iterations", str(args.iterations)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        row = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(f"{row['model']:>9} {row['method']:>10}  {row['seconds']:8.2f} s  "
              f"peak {row['peak_rss_mb']:7.0f} MB (model alone {row['model_rss_mb']:.0f} MB)  "
              f"min layer kept {row['min_layer_kept']}  empty: {row['empty_layers']}", flush=True)
    load = os.getloadavg()[0]
    print("\n| model | method | iterations | seconds | peak RSS MB | min kept/layer |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['method']} | {r['iterations']} | {r['seconds']:.2f} | "
              f"{r['peak_rss_mb']:.0f} | {r['min_layer_kept']} |")
    print(f"\n(torch threads {rows[0]['threads']}, 1-min load average at end {load:.2f})")
    if args.json_out:
        with open(args.json_out, "w") as fh:
            json.dump(rows, fh, indent=2)


if __name__ == "__main__":
    main()
