"""Graph lottery-ticket benchmark: TEDDY vs UGS vs random on the Planetoid citation graphs.

Runs ``graph.run.main`` once per (dataset, model) job and turns the ``summary.json`` files into
one Markdown report (``benchmark.md``) with: test accuracy per level (mean ± std over seeds),
wall time per level, and the time TEDDY needs for level k (dense teacher + scores + one run)
against the time UGS needs to reach level k (k mask rounds + the retraining).

    # the full protocol of the issue (3 seeds, 200 epochs, 20 levels; hours on a laptop CPU)
    python simulations/graph_benchmark.py --out results/graph_benchmark

    # what docs/graph.md reports (fits ~20-30 CPU minutes on a busy 2-core machine)
    python simulations/graph_benchmark.py --budget small --out results/graph_benchmark

Each job's own folder (config.yaml, levels.csv, summary.json, plots) sits under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from graph.run import main as run_main  # noqa: E402

ALL_LEVELS = list(range(1, 21))


def jobs(budget: str, seeds: list[int]) -> list[dict]:
    """(name, dataset, model, methods, levels, extra --set overrides) per job."""
    if budget == "full":
        epochs = ["train.epochs=200", "ugs.mask_epochs=200"]
        return [
            dict(name="cora_gcn", dataset="cora", model="gcn", methods=["teddy", "ugs", "random"],
                 levels=ALL_LEVELS, sets=epochs),
            dict(name="citeseer_gcn", dataset="citeseer", model="gcn",
                 methods=["teddy", "ugs", "random"], levels=ALL_LEVELS, sets=epochs),
            dict(name="cora_gat", dataset="cora", model="gat", methods=["teddy", "ugs", "random"],
                 levels=[1, 5, 10, 20], sets=epochs),
            dict(name="cora_gin", dataset="cora", model="gin", methods=["teddy", "ugs", "random"],
                 levels=[1, 5, 10, 20], sets=epochs),
        ]
    epochs = ["train.epochs=100", "ugs.mask_epochs=100"]
    return [
        dict(name="cora_gcn", dataset="cora", model="gcn", methods=["teddy", "ugs", "random"],
             levels=ALL_LEVELS, sets=epochs),
        dict(name="citeseer_gcn", dataset="citeseer", model="gcn", methods=["teddy", "ugs", "random"],
             levels=[1, 5, 10, 15, 20], sets=epochs),
        dict(name="cora_gat", dataset="cora", model="gat", methods=["teddy", "random"],
             levels=[1, 5, 10, 20], sets=epochs),
        dict(name="cora_gin", dataset="cora", model="gin", methods=["teddy", "random"],
             levels=[1, 5, 10, 20], sets=epochs),
    ]


def run_job(job: dict, out: Path, seeds: list[int], data_root: str | None, threads: int,
            quiet: bool) -> dict:
    # each job starts from its shipped config (configs/graph/<dataset>_<model>.yaml: the defaults)
    sets = [f"methods=[{','.join(job['methods'])}]", f"seeds=[{','.join(map(str, seeds))}]",
            f"torch_threads={threads}", "save_masks=false", f"name={job['name']}", *job["sets"]]
    args = argparse.Namespace(config=str(ROOT / "configs/graph" / f"{job['dataset']}_{job['model']}.yaml"), set=sets,
                              out=str(out / job["name"]),
                              levels=",".join(map(str, job["levels"])), data_root=data_root,
                              quiet=quiet)
    t0 = time.perf_counter()
    run_main(args)
    summary = json.loads((out / job["name"] / "summary.json").read_text())
    summary["job_seconds"] = time.perf_counter() - t0
    summary["job"] = job
    return summary


def _pct(m, s, n):
    return f"{100 * m:.2f} ± {100 * s:.2f}" if n > 1 else f"{100 * m:.2f}"


def report(summaries: list[dict], seeds: list[int], budget: str, command: str) -> str:
    lines = [f"# Graph benchmark ({budget})", "", f"Command: `{command}`", "",
             f"Seeds: {seeds}. Numbers are test accuracy (%) at the best validation epoch"
             + (", mean ± std over seeds." if len(seeds) > 1 else " (one seed)."), ""]
    for s in summaries:
        job = s["job"]
        lv = s["levels"]
        by = {(e["method"], e["level"]): e for e in lv}
        methods = s["methods"]
        levels = sorted({e["level"] for e in lv if e["method"] != "dense"})
        dense = by[("dense", 0)]
        lines += [f"## {job['model'].upper()} on {s['dataset']}", "",
                  f"Dense: {_pct(dense['test_accuracy'], dense['test_accuracy_std'], dense['num_seeds'])}"
                  f" (train {dense['seconds']:.1f} s). Job wall time {s['job_seconds']:.0f} s.", "",
                  "| level | graph sp. | weight sp. | " + " | ".join(methods) + " | "
                  + " | ".join(f"{m} s" for m in methods) + " |",
                  "|---:|---:|---:|" + "---:|" * (2 * len(methods))]
        for k in levels:
            e0 = next(by[(m, k)] for m in methods if (m, k) in by)
            accs = [(_pct(by[(m, k)]["test_accuracy"], by[(m, k)]["test_accuracy_std"],
                          by[(m, k)]["num_seeds"]) if (m, k) in by else "-") for m in methods]
            secs = [(f"{by[(m, k)]['seconds']:.1f}" if (m, k) in by else "-") for m in methods]
            lines.append(f"| {k} | {e0['graph_sparsity']:.3f} | {e0['weight_sparsity']:.3f} | "
                         + " | ".join(accs) + " | " + " | ".join(secs) + " |")
        if "teddy" in methods and "ugs" in methods:
            lines += ["", "Time to obtain level k from scratch (seconds): TEDDY = dense teacher + edge "
                      "scores + one run; UGS = k mask rounds + one retraining.", "",
                      "| level | TEDDY s | UGS s | UGS / TEDDY |", "|---:|---:|---:|---:|"]
            for k in levels:
                if ("teddy", k) in by and ("ugs", k) in by:
                    t, u = by[("teddy", k)]["cumulative_seconds"], by[("ugs", k)]["cumulative_seconds"]
                    lines.append(f"| {k} | {t:.1f} | {u:.1f} | {u / t:.1f}x |")
            wins = [k for k in levels if ("teddy", k) in by and ("ugs", k) in by
                    and by[("teddy", k)]["test_accuracy"] >= by[("ugs", k)]["test_accuracy"]]
            lines += ["", f"TEDDY ≥ UGS at {len(wins)} of {len(levels)} levels."]
        if "teddy" in methods:
            tsum = sum(by[("teddy", k)]["seconds"] for k in levels if ("teddy", k) in by)
            lines += ["", f"TEDDY sweep over {len(levels)} levels: {tsum:.0f} s "
                      f"(+ {dense['seconds']:.0f} s dense teacher)."]
        lines += ["", f"Plots: `{job['name']}/test_acc_vs_graph_sparsity.png`, "
                  f"`{job['name']}/test_acc_vs_weight_sparsity.png`", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="results/graph_benchmark")
    p.add_argument("--budget", choices=["small", "full"], default="full")
    p.add_argument("--seeds", default=None, help="comma list (default: 3846,3847,3848 full / 3846 small)")
    p.add_argument("--jobs", default=None, help="comma list of job names to run (default: all)")
    p.add_argument("--data-root", default=None)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--epochs", type=int, default=None,
                   help="override train.epochs and ugs.mask_epochs of every job (smoke tests)")
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args(argv)
    seeds = ([int(s) for s in a.seeds.split(",")] if a.seeds
             else ([3846, 3847, 3848] if a.budget == "full" else [3846]))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    todo = jobs(a.budget, seeds)
    if a.jobs:
        names = set(a.jobs.split(","))
        todo = [j for j in todo if j["name"] in names]
    if a.epochs:
        for j in todo:
            j["sets"] = j["sets"] + [f"train.epochs={a.epochs}", f"ugs.mask_epochs={a.epochs}"]
    summaries = []
    for job in todo:
        print(f"== {job['name']}: {job['methods']} levels {job['levels']} seeds {seeds}",
              file=sys.stderr, flush=True)
        summaries.append(run_job(job, out, seeds, a.data_root, a.threads, a.quiet))
        command = "python simulations/graph_benchmark.py " + " ".join(argv if argv is not None else sys.argv[1:])
        (out / "benchmark.md").write_text(report(summaries, seeds, a.budget, command))
    print((out / "benchmark.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
