"""The 20-level Cora GCN TEDDY sweep, today's implementation beside a reference one, in one run.

    python simulations/graph_speed_benchmark.py [--reference /work/main] [--epochs 200]
        [--threads 1] [--data-root DIR] [--out results/graph_speed]

Each implementation runs the same sweep from its own CLI, in a fresh subprocess (its own
``PYTHONPATH`` and working tree): the dense teacher plus TEDDY at levels 1..20, one seed (3846),
``--epochs`` epochs per run, ``--threads`` torch threads. The reference is another checkout of this
repository (default: ``/work/main``, the code before this change) run with its own
``configs/graph/cora_gcn.yaml`` and λ = 10, so both sweeps train the same method. Printed: wall
time of each (process start to exit, data loading included), the ratio, and both accuracy
tables. On a shared machine run the two back to back (as here) and read the ratio; the absolute
seconds move with whatever else the CPU is doing.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_sweep(tree: Path, config: str, extra: list[str], out: Path, epochs: int, threads: int,
              data_root: str | None) -> tuple[float, dict]:
    cmd = [sys.executable, "-m", "graph.run", "-c", config, "--set", "methods=[teddy]",
           "--set", "seeds=[3846]", "--set", f"train.epochs={epochs}", "--set", "sweep.levels=[]",
           "--set", f"torch_threads={threads}", "--set", "save_masks=false", "--out", str(out),
           "--quiet", *extra]
    if data_root:
        cmd += ["--data-root", data_root]
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": str(threads)}
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=tree, env=env, check=True)
    wall = time.perf_counter() - t0
    return wall, json.loads((out / "summary.json").read_text())


def table(summary: dict) -> dict[int, float]:
    return {e["level"]: 100 * e["test_accuracy"] for e in summary["levels"]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reference", default="/work/main", help="checkout of the implementation to compare with")
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--data-root", default=None)
    p.add_argument("--out", default="results/graph_speed")
    a = p.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    ref = Path(a.reference)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    t_ref, s_ref = run_sweep(ref, "configs/graph/cora_gcn.yaml", ["--set", "teddy.kd_lambda=10"],
                             out.resolve() / f"reference-{stamp}", a.epochs, a.threads, a.data_root)
    t_new, s_new = run_sweep(REPO, "configs/graph/cora_gcn.yaml", [], out.resolve() / f"new-{stamp}",
                             a.epochs, a.threads, a.data_root)
    print(f"20-level Cora GCN TEDDY sweep, seed 3846, {a.epochs} epochs, {a.threads} thread(s), "
          f"dense teacher included, wall time per process:")
    print(f"  reference ({ref}): {t_ref:8.1f} s")
    print(f"  this tree ({REPO}): {t_new:8.1f} s")
    print(f"  ratio: {t_ref / t_new:.2f}x faster")
    tr, tn = table(s_ref), table(s_new)
    print(f"{'level':>5} {'reference':>10} {'this tree':>10}")
    for k in sorted(set(tr) | set(tn)):
        print(f"{k:>5} {tr.get(k, float('nan')):>10.2f} {tn.get(k, float('nan')):>10.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
