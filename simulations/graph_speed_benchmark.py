"""The 20-level Cora GCN TEDDY sweep: this tree beside today's implementation, in one run.

    python simulations/graph_speed_benchmark.py [--reference /work/main | --reference ""]
        [--sequential] [--epochs 200] [--threads 2] [--data-root DIR] [--out results/graph_speed]

Each sweep runs from the CLI in a fresh subprocess: the dense teacher plus TEDDY at levels 1..20,
one seed (3846), ``--epochs`` epochs per run, ``--threads`` torch threads, the tree's own
``configs/graph/cora_gcn.yaml``, masks not saved. This tree runs with its defaults (the batched
loop, :mod:`graph.batched`); ``--reference`` runs another checkout of this repository the same
way (default ``/work/main``, today's implementation; ``""`` skips it), back to back;
``--sequential`` adds this tree with ``batch_levels=false`` (one training loop per level).
Printed: wall and CPU time of each process (start to exit, data loading included), the ratios to
this tree, the test accuracies side by side and their largest difference. On a shared machine
read the ratios (the sweeps run back to back) and the CPU times; the absolute wall seconds move
with whatever else the CPU is doing.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_sweep(tree: Path, config: str, extra: list[str], out: Path, epochs: int, threads: int,
              data_root: str | None) -> tuple[float, float, dict]:
    cmd = [sys.executable, "-m", "graph.run", "-c", config, "--set", "methods=[teddy]",
           "--set", "seeds=[3846]", "--set", f"train.epochs={epochs}", "--set", "sweep.levels=[]",
           "--set", f"torch_threads={threads}", "--set", "save_masks=false", "--out", str(out),
           "--quiet", *extra]
    if data_root:
        cmd += ["--data-root", data_root]
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": str(threads)}
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=tree, env=env, check=True)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    # CPU time moves less than wall time when other jobs share the cores
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    return wall, cpu, json.loads((out / "summary.json").read_text())


def table(summary: dict) -> dict[int, float]:
    return {e["level"]: 100 * e["test_accuracy"] for e in summary["levels"]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reference", default="/work/main",
                   help="another checkout to compare with ('' to skip)")
    p.add_argument("--sequential", action="store_true",
                   help="also run this tree level by level (batch_levels=false)")
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--data-root", default=None)
    p.add_argument("--out", default="results/graph_speed")
    a = p.parse_args()
    out = Path(a.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    cfg = "configs/graph/cora_gcn.yaml"
    runs: dict[str, tuple[float, float, dict]] = {}
    if a.reference:
        runs[f"reference {a.reference}"] = run_sweep(Path(a.reference), cfg, [],
                                                     out / f"reference-{stamp}", a.epochs,
                                                     a.threads, a.data_root)
    runs["this tree"] = run_sweep(REPO, cfg, [], out / f"this-{stamp}", a.epochs, a.threads,
                                  a.data_root)
    if a.sequential:
        runs["this tree, level by level"] = run_sweep(
            REPO, cfg, ["--set", "batch_levels=false"], out / f"sequential-{stamp}", a.epochs,
            a.threads, a.data_root)
    print(f"20-level Cora GCN TEDDY sweep, seed 3846, {a.epochs} epochs, {a.threads} thread(s), "
          f"dense teacher included, wall and CPU time per process:")
    t_new, c_new = runs["this tree"][:2]
    for name, (t, c, _) in runs.items():
        print(f"  {name:<28} {t:8.1f} s wall ({t / t_new:5.2f}x this tree), "
              f"{c:8.1f} s CPU ({c / c_new:5.2f}x)")
    tables = {name: table(s) for name, (_, _, s) in runs.items()}
    names = list(tables)
    print(f"{'level':>5} " + " ".join(f"{n[:24]:>24}" for n in names))
    for k in sorted(set().union(*tables.values())):
        print(f"{k:>5} " + " ".join(f"{tables[n].get(k, float('nan')):>24.2f}" for n in names))
    for n in names:
        if n == "this tree":
            continue
        diffs = [abs(tables[n][k] - tables["this tree"][k]) for k in tables[n]
                 if k in tables["this tree"]]
        print(f"largest |accuracy difference| to this tree, {n}: {max(diffs):.2f} points; "
              f"mean over levels {sum(tables[n].values()) / len(tables[n]):.2f} vs "
              f"{sum(tables['this tree'].values()) / len(tables['this tree']):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
