"""Federated graph tickets on Cora: every method and baseline on the same 10 METIS client parts.

Federated methods run through the real ServerApp and ClientApp in process
(``fedticket.fl.server_app.run_in_process``, an in-memory Grid: the numbers are the simulation
engine's, without Ray) from configs/fl/cora_graph.yaml, one results folder each. Two
non-federated references use the same parts, node splits, features and TEDDY sparsity:

- ``local-only``: each client trains a dense GCN on its own subgraph alone (Adam, lr 0.01,
  weight decay 5e-4, ``--local-epochs`` full-batch epochs), tested on its own test nodes;
- ``centralized-teddy``: one dense GCN on the whole graph (edges across parts kept), TEDDY on the
  whole graph at the same sparsity, trained on every client's train nodes (upper bound).

Accuracy is over all clients' test nodes (each in its own subgraph for the federated methods and
local-only); ``client mean`` is the mean of each client's own test accuracy where it is computed
(local-only, centralized). Output: table.md, results.json, accuracy_vs_round.png,
accuracy_vs_uplink.png under ``--out``.

    python simulations/fl_graph_benchmark.py --rounds 30 --seeds 0 --out runs/fl_graph_benchmark
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from fedticket.fl.run import prepare  # noqa: E402
from fedticket.fl.server_app import run_in_process  # noqa: E402
from fedticket.results import plot_lines, read_csv  # noqa: E402
from graph.data import load_planetoid  # noqa: E402
from graph.fedtask import DIMS, clients, unit_scale_rows  # noqa: E402
from graph.models import build_model  # noqa: E402
from graph.transforms import teddy_sparsify_edges  # noqa: E402

FED_METHODS = ("signscore", "fedavg", "hidenseek", "fedavg-subnet", "binary-mask")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default=str(REPO / "configs/fl/cora_graph.yaml"))
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--seeds", default="0", help="comma-separated seeds")
    p.add_argument("--methods", default=",".join(FED_METHODS))
    p.add_argument("--local-epochs", type=int, default=200)
    p.add_argument("--out", default="runs/fl_graph_benchmark")
    p.add_argument("--no-references", action="store_true",
                   help="skip local-only and centralized-teddy (e.g. when adding methods)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    return p.parse_args(argv)


def _train_dense(cfg, x, edge_index, train, test, y, epochs, seed):
    torch.manual_seed(seed)
    g = cfg.graph
    # the dataset's classes, not the client's: a part may lack some
    model = build_model(g.model, x.shape[1], DIMS[g.dataset][1], hidden=g.hidden, dropout=g.dropout)
    opt = torch.optim.Adam(model.parameters(), lr=0.01, weight_decay=5e-4)
    for _ in range(epochs):
        model.train()
        opt.zero_grad()
        F.cross_entropy(model(x, edge_index)[train], y[train]).backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        pred = model(x, edge_index).argmax(1)
    return int((pred[test] == y[test]).sum()), int(len(test))


def local_only(cfg, epochs, seed):
    hits = total = 0
    per = []
    for sub, graph in clients(cfg, cfg.data.root):
        h, n = _train_dense(cfg, graph.x, graph.edge_index, sub.train, sub.test, sub.y,
                            epochs, seed)
        hits, total = hits + h, total + n
        per.append(h / max(n, 1))
    return hits / total, sum(per) / len(per)


def centralized(cfg, epochs, seed):
    data = load_planetoid(cfg.graph.dataset, cfg.data.root, normalize_features=False)
    x = unit_scale_rows(data.x)
    ei = data.edge_index
    if cfg.graph.sparsity > 0:
        ei, _ = teddy_sparsify_edges(ei, cfg.graph.sparsity, data.num_nodes)
    parts = clients(cfg, cfg.data.root)
    train = torch.cat([s.nodes[s.train] for s, _ in parts])
    test = torch.cat([s.nodes[s.test] for s, _ in parts])
    h, n = _train_dense(cfg, x, ei, train, test, data.y, epochs, seed)
    return h / n


def main(argv=None):
    a = parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in a.seeds.split(",")]
    methods = [m for m in a.methods.split(",") if m]
    results: dict = {"config": a.config, "rounds": a.rounds, "seeds": seeds, "runs": {}}
    curves, uplink_curves = {}, {}
    # the references first: seconds, where the federated runs take minutes
    cfg = prepare(a.config, [*a.sets])
    for seed in [] if a.no_references else seeds:
        lo, lo_mean = local_only(cfg, a.local_epochs, seed)
        ce = centralized(cfg, a.local_epochs, seed)
        results["runs"][f"local-only-s{seed}"] = {"final_global_accuracy": lo,
                                                 "client_mean_accuracy": lo_mean}
        results["runs"][f"centralized-teddy-s{seed}"] = {"final_global_accuracy": ce}
        print(f"local-only seed {seed}: {lo:.4f} (client mean {lo_mean:.4f}); "
              f"centralized-teddy: {ce:.4f}", flush=True)
    for m in methods:
        for seed in seeds:
            cfg = prepare(a.config, [f"method={m}", f"rounds={a.rounds}", f"seed={seed}",
                                     "eval.personal_every=0", "server.overwrite=true", *a.sets])
            t0 = time.perf_counter()
            summary = run_in_process(cfg, out / f"{m}-s{seed}", quiet=True)
            rows = read_csv(out / f"{m}-s{seed}" / "rounds.csv")
            results["runs"][f"{m}-s{seed}"] = {
                "final_global_accuracy": summary["final_global_accuracy"],
                "best_global_accuracy": summary["best_global_accuracy"],
                "uplink_bytes_per_client_round": summary["uplink_bytes_per_client_round"],
                "seconds": time.perf_counter() - t0}
            if seed == seeds[0]:
                r = [int(x["round"]) for x in rows]
                acc = [float(x["global_accuracy"]) for x in rows]
                up = [float(x["uplink_bytes"]) for x in rows]
                cum = [sum(up[:i + 1]) for i in range(len(up))]
                curves[m] = (r, acc)
                uplink_curves[m] = (cum[1:], acc[1:])
            print(f"{m} seed {seed}: final {summary['final_global_accuracy']:.4f} uplink/client/"
                  f"round {summary['uplink_bytes_per_client_round']:.0f} B", flush=True)
    names = methods + ([] if a.no_references else ["local-only", "centralized-teddy"])
    lines = ["| method | final acc (mean over seeds) | uplink B / client / round | vs fedavg uplink |",
             "|---|---|---|---|"]
    dense_up = None
    if "fedavg" in methods:
        dense_up = results["runs"][f"fedavg-s{seeds[0]}"]["uplink_bytes_per_client_round"]
    for n in names:
        runs = [results["runs"][f"{n}-s{s}"] for s in seeds]
        acc = sum(r["final_global_accuracy"] for r in runs) / len(runs)
        up = runs[0].get("uplink_bytes_per_client_round")
        ratio = f"{dense_up / up:.0f}x less" if (up and dense_up) else "-"
        lines.append(f"| {n} | {acc:.4f} | {up:.0f} | {ratio} |" if up else
                     f"| {n} | {acc:.4f} | - | - |")
    (out / "table.md").write_text("\n".join(lines) + "\n")
    (out / "results.json").write_text(json.dumps(results, indent=2))
    plot_lines(out / "accuracy_vs_round.png", curves, "round", "global test accuracy",
               "Cora, 10 METIS clients, GCN")
    plot_lines(out / "accuracy_vs_uplink.png", uplink_curves, "cumulative uplink bytes",
               "global test accuracy", "Cora, 10 METIS clients, GCN", logx=True)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
