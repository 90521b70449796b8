"""The 20-level Cora GCN TEDDY sweep: this tree beside today's implementation, in one run.

    python simulations/graph_speed_benchmark.py [--reference /work/main | --reference ""]
        [--sequential] [--epochs 200] [--threads 2] [--data-root DIR] [--out results/graph_speed]
    python simulations/graph_speed_benchmark.py --per-step 20 [--data-root DIR]
    python simulations/graph_speed_benchmark.py --components 40 [--data-root DIR]

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

``--per-step E`` trains the 20 TEDDY levels of seed 3846 in-process for E epochs (one thread,
a 50-epoch teacher) three times, alternating: the C kernels on (:mod:`fedticket.core.native`:
the ℓ0 projection's passes and the fused output layer), off (``FEDTICKET_NATIVE=0``: the torch
ops), on again; it prints CPU milliseconds per level-step and the projection's share. On a shared
machine this is the steadier comparison: both variants run in one process, interleaved.

``--components E``: the same in-process run (one thread, 20 levels x E epochs), twice, the bag
kernels off (torch's embedding bags, :func:`graph.ops.bag_kernels` returning None) then on,
each printing the thread CPU milliseconds per level-step of every part of a step (the products,
the output layer, the projection, Adam, the validation record, the mask draw; "rest" is the
loss gradient and the Python around them).
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


def _levels_setup(data_root: str | None) -> tuple:
    """``train_gcn_levels``'s first arguments for the 20 TEDDY levels of Cora, seed 3846, and a
    50-epoch teacher's logits (one thread)."""
    import torch

    from fedticket.core.l0ball import weights_to_keep
    from graph.config import SweepConfig
    from graph.data import load_planetoid
    from graph.edges import undirected_pairs
    from graph.features import maybe_sparse
    from graph.models import build_model
    from graph.train import train_node_classifier
    from graph.transforms import teddy_ranking

    torch.set_num_threads(1)
    root = data_root or os.environ.get("FEDTICKET_DATA", "data")
    data = load_planetoid("cora", root, True)
    x = maybe_sparse(data.x)
    torch.manual_seed(3846)
    model = build_model("gcn", data.num_features, 7, 512, None, 0.5)
    init = {k: v.detach().clone() for k, v in model.state_dict().items()}
    teacher = train_node_classifier(model, x, data, data.edge_index, epochs=50).logits
    ranking = teddy_ranking(undirected_pairs(data.edge_index, data.num_nodes))
    n = sum(p.numel() for p in model.parameters())
    sched = SweepConfig(graph_rate=0.05, weight_rate=0.2, num_levels=20).schedule()
    eis = [data.edge_index[:, ranking.keep_mask(gs)] for _, gs, _ in sched]
    keeps = [weights_to_keep(n, ws) if ws > 0 else None for _, _, ws in sched]
    return model, init, x, data, eis, keeps, teacher


def _teacher_kw(setup: tuple) -> tuple:
    *head, teacher = setup
    return tuple(head), teacher


def per_step(epochs: int, data_root: str | None) -> None:
    from fedticket.core import l0ball
    from graph import batched

    (model, init, x, data, eis, keeps), teacher = _teacher_kw(_levels_setup(data_root))
    spent = {"proj": 0.0}
    project = l0ball.L0Ball.project

    def timed(self):
        t = time.thread_time()
        r = project(self)
        spent["proj"] += time.thread_time() - t
        return r

    l0ball.L0Ball.project = timed
    print(f"20 Cora GCN TEDDY levels in one process, {epochs} epochs, 1 thread, CPU ms per "
          f"level-step (C kernels on / off = FEDTICKET_NATIVE=0, alternating):")
    accs = {}
    for name, flag in (("kernels on", "1"), ("kernels off", "0"), ("kernels on", "1")):
        os.environ["FEDTICKET_NATIVE"] = flag
        spent["proj"] = 0.0
        c0 = time.process_time()
        res = batched.train_gcn_levels(model, init, x, data, eis, keeps, seed=3846,
                                       epochs=epochs, teacher_logits=teacher, kd_lambda=10.0)
        steps = epochs * len(eis)
        cpu = 1000 * (time.process_time() - c0) / steps
        print(f"  {name:<12} {cpu:6.2f} ms per level-step, of which the projection "
              f"{1000 * spent['proj'] / steps:5.2f} ms")
        accs.setdefault(name, [round(100 * r.test_accuracy, 1) for r in res])
    os.environ.pop("FEDTICKET_NATIVE")
    for name, a in accs.items():
        print(f"  test accuracy, levels 1-20, {name}: {a}")


def components(epochs: int, data_root: str | None) -> None:
    import collections
    import threading

    from fedticket.core import l0ball
    from graph import batched, ops

    args, teacher = _teacher_kw(_levels_setup(data_root))
    spent: dict[str, float] = collections.defaultdict(float)
    depth = threading.local()

    def timed(owner, name, label):
        fn = getattr(owner, name)

        def run(*a, **k):  # only the outermost timed call counts (bags inside the chain do not)
            outer = not getattr(depth, "n", 0)
            depth.n = getattr(depth, "n", 0) + 1
            t = time.thread_time()
            try:
                return fn(*a, **k)
            finally:
                depth.n -= 1
                if outer:
                    spent[label(*a) if callable(label) else label] += time.thread_time() - t
        setattr(owner, name, run)
        return fn

    def bag_label(m, h, *rest):
        return f"bag {m.shape[0]}x{m.shape[1]} @ {h.shape[1]} wide"

    originals = [(ops.BagMatrix, "mm", timed(ops.BagMatrix, "mm", bag_label)),
                 (batched, "transposed_chain",
                  timed(batched, "transposed_chain", "X^T (A^T G) (first-layer gradient)")),
                 (ops.GCNOutLayer, "aggregate_forward",
                  timed(ops.GCNOutLayer, "aggregate_forward", "A (X W1^T) + output layer fwd")),
                 (ops.GCNOutLayer, "backward", timed(ops.GCNOutLayer, "backward",
                                                     "output layer bwd")),
                 (l0ball.L0Ball, "project", timed(l0ball.L0Ball, "project", "l0 projection")),
                 (ops.FusedAdam, "step", timed(ops.FusedAdam, "step", "Adam")),
                 (batched._Level, "record", timed(batched._Level, "record", "validation record")),
                 (batched, "dropout", timed(batched, "dropout", "dropout draw"))]
    bag_kernels = ops.bag_kernels
    print(f"20 Cora GCN TEDDY levels in one process, {epochs} epochs, 1 thread, thread CPU ms per "
          f"level-step by part (bag kernels off, then on):")
    try:
        for name, on in (("bag kernels off", False), ("bag kernels on", True)):
            ops.bag_kernels = bag_kernels if on else (lambda: None)
            spent.clear()
            c0 = time.process_time()
            res = batched.train_gcn_levels(*args, seed=3846, epochs=epochs,
                                           teacher_logits=teacher, kd_lambda=10.0)
            steps = epochs * len(res)
            total = 1000 * (time.process_time() - c0) / steps
            print(f"  {name}: {total:6.2f} ms per level-step")
            for k, v in sorted(spent.items(), key=lambda kv: -kv[1]):
                print(f"    {k:<40} {1000 * v / steps:6.2f}")
            print(f"    {'rest':<40} {total - 1000 * sum(spent.values()) / steps:6.2f}")
            print(f"    test accuracy, levels 1-20: "
                  f"{[round(100 * r.test_accuracy, 1) for r in res]}")
    finally:
        ops.bag_kernels = bag_kernels
        for owner, name, fn in originals:
            setattr(owner, name, fn)


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
    p.add_argument("--per-step", type=int, default=0, metavar="E",
                   help="instead: in-process per-level-step CPU ms, C kernels on vs off")
    p.add_argument("--components", type=int, default=0, metavar="E",
                   help="instead: in-process CPU ms per level-step by part, bag kernels off/on")
    a = p.parse_args()
    if a.per_step:
        per_step(a.per_step, a.data_root)
        return 0
    if a.components:
        components(a.components, a.data_root)
        return 0
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
