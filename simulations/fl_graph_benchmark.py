"""Federated graph tickets on Cora: every method and baseline on the same 10 METIS client parts.

Federated methods run through the real ServerApp and ClientApp in process
(``fedticket.fl.server_app.run_in_process``, an in-memory Grid: the numbers are the simulation
engine's, without Ray) from configs/fl/cora_graph.yaml, one results folder each. Two
non-federated references use the same parts, node splits, features and TEDDY sparsity:

- ``local-only``: each client trains a dense GCN on its own subgraph alone (Adam, lr 0.01,
  weight decay 5e-4, ``--local-epochs`` full-batch epochs), tested on its own test nodes;
- ``centralized-teddy``: one dense GCN on the whole graph (edges across parts kept), TEDDY on the
  whole graph at the same sparsity, trained on every client's train nodes (upper bound);
- ``centralized-signscore``: signscore's own ticket and client learner (the config's density,
  scores, weight_norm) trained by ONE learner holding every client's train nodes in the union of
  the clients' subgraphs, for ``--rounds`` x ``train.local_epochs`` steps (what one federated
  client takes in the run): what the frozen ticket reaches without the vote.

Each reference uses the run's seed for the parts and node splits, as the federated runs do.
``--method-set METHOD:KEY=VALUE`` overrides the config for one method (or reference) only, after
``--set``: a baseline kept at its own setting while the config is tuned for the sign supermask.

Two accuracies per run: ``global`` over all clients' test nodes (each in its own subgraph for the
federated methods and local-only, in the whole graph for centralized), and ``per client``: the
final global model (local-only: each client's own model) on each client's own test nodes, mean
and min over the clients. Uplink is the measured wire payload per client per round (what
``rounds.csv`` counts), so an entropy-coded method's ratio is its real one.
Output under ``--out``: table.md (mean ± std over seeds), results.json, accuracy_vs_round.png
and accuracy_vs_uplink.png (± 1 std bands over seeds), one results folder per method and seed.

    python simulations/fl_graph_benchmark.py --rounds 30 --seeds 0,1,2 --out runs/fl_graph_benchmark

``--reuse`` keeps the runs already finished under ``--out`` (a folder with summary.json and
per_client.json) and only adds the missing ones: a long benchmark can be run in pieces.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from fedticket.core.mask import Mask  # noqa: E402
from fedticket.fl.methods import make_method, method_class  # noqa: E402
from fedticket.fl.model import build_ticket, build_weights, evaluate  # noqa: E402
from fedticket.fl.run import prepare  # noqa: E402
from fedticket.fl.server_app import run_in_process  # noqa: E402
from fedticket.fl.task import get_task  # noqa: E402
from fedticket.results import plot_lines, read_csv  # noqa: E402
from graph.data import load_planetoid  # noqa: E402
from graph.fedtask import DIMS, Graph, NodeView, clients, unit_scale_rows  # noqa: E402
from graph.models import build_model  # noqa: E402
from graph.transforms import teddy_sparsify_edges  # noqa: E402

FED_METHODS = ("signscore-care", "signscore", "fedavg", "fedavg-subnet", "binary-mask", "hidenseek")
REFERENCES = ("local-only", "centralized-teddy", "centralized-signscore")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default=str(REPO / "configs/fl/cora_graph.yaml"))
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--seeds", default="0", help="comma-separated seeds")
    p.add_argument("--methods", default=",".join(FED_METHODS))
    p.add_argument("--local-epochs", type=int, default=200)
    p.add_argument("--out", default="runs/fl_graph_benchmark")
    p.add_argument("--references", default=",".join(REFERENCES),
                   help="the non-federated references to run (comma-separated)")
    p.add_argument("--no-references", action="store_true",
                   help="run no reference (e.g. when adding methods); those of the last run "
                        "under --out are kept")
    p.add_argument("--reuse", action="store_true",
                   help="keep finished runs under --out, run only the missing ones")
    p.add_argument("--table-only", action="store_true",
                   help="run nothing: the table and plots from the runs under --out (a method "
                        "with fewer finished seeds says how many)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--method-set", dest="method_sets", action="append", default=[],
                   metavar="METHOD:KEY=VALUE",
                   help="a config override for one method only, after --set (e.g. a baseline "
                        "kept at its own setting while the config tunes signscore)")
    a = p.parse_args(argv)
    a.per_method = method_overrides(a.method_sets)
    return a


def method_overrides(items: list[str]) -> dict[str, list[str]]:
    """``["fedavg:graph.dropout=0.5", ...]`` as ``{"fedavg": ["graph.dropout=0.5"], ...}``."""
    known = FED_METHODS + REFERENCES
    out: dict[str, list[str]] = {}
    for item in items:
        m, sep, kv = item.partition(":")
        if not sep or "=" not in kv or m not in known:
            raise SystemExit(f"--method-set {item!r}: expected METHOD:KEY=VALUE with METHOD one "
                             f"of {', '.join(known)}")
        out.setdefault(m, []).append(kv)
    return out


def _train_dense(cfg, x, edge_index, train, y, epochs, seed):
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
        return model(x, edge_index).argmax(1)


def _record(hits: list[int], sizes: list[int]) -> dict:
    per = [h / max(n, 1) for h, n in zip(hits, sizes)]
    return {"final_global_accuracy": sum(hits) / sum(sizes),
            "client_mean_accuracy": sum(per) / len(per), "client_min_accuracy": min(per),
            "client_accuracies": per}


def local_only(cfg, epochs, seed) -> dict:
    hits, sizes = [], []
    for sub, graph in clients(cfg, cfg.data.root):
        pred = _train_dense(cfg, graph.x, graph.edge_index, sub.train, sub.y, epochs, seed)
        hits.append(int((pred[sub.test] == sub.y[sub.test]).sum()))
        sizes.append(len(sub.test))
    return _record(hits, sizes)


def centralized(cfg, epochs, seed) -> dict:
    data = load_planetoid(cfg.graph.dataset, cfg.data.root, normalize_features=False)
    x = unit_scale_rows(data.x)
    ei = data.edge_index
    if cfg.graph.sparsity > 0:
        ei, _ = teddy_sparsify_edges(ei, cfg.graph.sparsity, data.num_nodes)
    parts = clients(cfg, cfg.data.root)
    train = torch.cat([s.nodes[s.train] for s, _ in parts])
    pred = _train_dense(cfg, x, ei, train, data.y, epochs, seed)
    hits = [int((pred[s.nodes[s.test]] == data.y[s.nodes[s.test]]).sum()) for s, _ in parts]
    return _record(hits, [len(s.test) for s, _ in parts])


def centralized_signscore(cfg, rounds) -> dict:
    """The federated sign supermask's own model trained by ONE client that holds every client's
    train nodes (the disjoint union of the clients' subgraphs, as the federation sees them), for
    as many local steps as a federated client takes in the whole run: what the frozen ticket can
    reach without the vote."""
    parts = clients(cfg, cfg.data.root)
    xs, eis, train, test, ys, off = [], [], [], [], [], 0
    for sub, graph in parts:
        xs.append(graph.x)
        eis.append(graph.edge_index + off)
        train.append(sub.train + off)
        test.append(sub.test + off)
        ys.append(sub.y)
        off += sub.num_nodes
    union, y = Graph(torch.cat(xs), torch.cat(eis, dim=1)), torch.cat(ys)
    method = make_method(cfg, build_ticket(cfg, None))
    method.initial_global()
    learner = method.learner(0)
    train = torch.cat(train)
    for r in range(rounds):
        learner.train(NodeView(union, train), y[train], r + 1)
    model = learner.eval_model()
    hits, sizes = [], []
    for t in test:
        acc, _ = evaluate(model, NodeView(union, t), y[t], cfg.eval.batch_size)
        hits.append(round(acc * len(t)))
        sizes.append(len(t))
    return _record(hits, sizes)


def prepare_seeded(cfg, seed):
    """``cfg`` with ``seed`` (the ticket and the clients' splits follow it)."""
    import dataclasses
    return dataclasses.replace(cfg, seed=int(seed))


def per_client(cfg, payload, server_round) -> dict:
    """The final global model (as the server evaluates it) on each client's own test nodes."""
    mask = Mask.ones_like(build_weights(cfg)) if method_class(cfg.method).dense else None
    method = make_method(cfg, build_ticket(cfg, mask))
    method.initial_global()
    model = method.eval_model(payload, server_round)
    task = get_task(cfg)
    hits, sizes = [], []
    for p in range(cfg.num_clients):
        x, y = task.client_test_data(cfg, cfg.data.root, p)
        acc, _ = evaluate(model, x, y, cfg.eval.batch_size)
        hits.append(round(acc * len(y)))
        sizes.append(len(y))
    return _record(hits, sizes)


def method_config(a, m: str, seed: int):
    """The run config of one federated method: the config, ``--set``, then its ``--method-set``."""
    return prepare(a.config, [f"method={m}", f"rounds={a.rounds}", f"seed={seed}",
                              "eval.personal_every=0", "server.overwrite=true", *a.sets,
                              *a.per_method.get(m, [])])


def run_federated(a, m, seed, out: Path) -> dict | None:
    folder = out / f"{m}-s{seed}"
    if a.table_only:
        done = folder / "per_client.json"
        return json.loads(done.read_text()) if done.is_file() else None
    if a.reuse and (folder / "per_client.json").is_file() and (folder / "summary.json").is_file():
        return json.loads((folder / "per_client.json").read_text())
    cfg = method_config(a, m, seed)
    last = {}
    t0 = time.perf_counter()
    summary = run_in_process(cfg, folder, quiet=True,
                             on_round_end=lambda r, arrays: last.update(r=r, p=arrays["payload"]))
    seconds = time.perf_counter() - t0
    rec = per_client(cfg, last["p"], last["r"])
    rec["final_global_accuracy"] = summary["final_global_accuracy"]   # the server's own number
    rec["uplink_bytes_per_client_round"] = summary["uplink_bytes_per_client_round"]
    rec["bits_per_kept_weight"] = summary.get("uplink_bits_per_kept_weight")
    rec["seconds"] = seconds
    (folder / "per_client.json").write_text(json.dumps(rec, indent=2))
    return rec


def _ms(xs: list[float]) -> str:
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{statistics.mean(xs):.4f} ± {sd:.4f}" if len(xs) > 1 else f"{xs[0]:.4f}"


def _curves(out: Path, m: str, seeds):
    """Mean and std over seeds of the global accuracy per round; x for the uplink plot."""
    runs = [read_csv(out / f"{m}-s{s}" / "rounds.csv") for s in seeds]
    n = min(len(r) for r in runs)
    accs = [[float(r[i]["global_accuracy"]) for r in runs] for i in range(n)]
    mean = [statistics.mean(a) for a in accs]
    sd = [statistics.stdev(a) if len(a) > 1 else 0.0 for a in accs]
    rounds = [int(runs[0][i]["round"]) for i in range(n)]
    up = [statistics.mean(float(r[i]["uplink_bytes"]) for r in runs) for i in range(n)]
    cum = [sum(up[:i + 1]) / 1e6 for i in range(n)]
    return rounds, mean, sd, cum


def main(argv=None):
    a = parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in a.seeds.split(",")]
    methods = [m for m in a.methods.split(",") if m]
    cfg = prepare(a.config, [*a.sets])
    results: dict = {"command": "python simulations/fl_graph_benchmark.py " + " ".join(sys.argv[1:]),
                     "config": a.config, "rounds": a.rounds, "seeds": seeds, "sets": a.sets,
                     "method_sets": a.per_method, "runs": {}}
    # the references first: seconds, where the federated runs take minutes
    refs = list(REFERENCES)
    run_refs = [] if a.no_references or a.table_only else [r for r in a.references.split(",") if r]
    bad = [r for r in run_refs if r not in REFERENCES]
    if bad:
        raise SystemExit(f"--references: unknown {', '.join(bad)} (known: {', '.join(REFERENCES)})")
    if (out / "results.json").is_file():   # the references not rerun: as the last run made them
        old = json.loads((out / "results.json").read_text())["runs"]
        results["runs"].update({k: v for k, v in old.items()
                                if k.startswith(tuple(r for r in REFERENCES if r not in run_refs))})
    ref_cfg = {r: prepare(a.config, [*(["method=signscore"] if r == "centralized-signscore"
                                       else []), *a.sets, *a.per_method.get(r, [])])
               for r in run_refs}
    for seed in seeds:
        for r in run_refs:
            # the seed also draws the parts and node splits: the same ones as the federated runs
            cfg_r = prepare_seeded(ref_cfg[r], seed)
            if r == "local-only":
                rec = local_only(cfg_r, a.local_epochs, seed)
            elif r == "centralized-teddy":
                rec = centralized(cfg_r, a.local_epochs, seed)
            else:
                rec = centralized_signscore(cfg_r, a.rounds)
            results["runs"][f"{r}-s{seed}"] = rec
            print(f"seed {seed}: {r} {rec['final_global_accuracy']:.4f} (client mean "
                  f"{rec['client_mean_accuracy']:.4f})", flush=True)
    for m in methods:
        for seed in seeds:
            r = run_federated(a, m, seed, out)
            if r is None:
                continue
            results["runs"][f"{m}-s{seed}"] = r
            print(f"{m} seed {seed}: global {r['final_global_accuracy']:.4f}, client mean "
                  f"{r['client_mean_accuracy']:.4f} / min {r['client_min_accuracy']:.4f}, uplink "
                  f"{r['uplink_bytes_per_client_round']:.0f} B / client / round", flush=True)
    def done(n):
        return [s for s in seeds if f"{n}-s{s}" in results["runs"]]

    dense_up = (statistics.mean(results["runs"][f"fedavg-s{s}"]["uplink_bytes_per_client_round"]
                                for s in done("fedavg")) if done("fedavg") else None)
    lines = ["| method | global acc | per-client acc: mean | per-client acc: min | "
             "uplink B / client / round | uplink vs fedavg |", "|---|---|---|---|---|---|"]
    methods = [m for m in methods if done(m)]
    refs = [n for n in refs if done(n)]
    for n in methods + refs:
        runs = [results["runs"][f"{n}-s{s}"] for s in done(n)]
        cells = [_ms([r[k] for r in runs]) for k in
                 ("final_global_accuracy", "client_mean_accuracy", "client_min_accuracy")]
        if n in REFERENCES:
            up = ratio = "–"
        else:
            b = statistics.mean(r["uplink_bytes_per_client_round"] for r in runs)
            up = f"{b:,.0f}"
            ratio = f"{dense_up / b:.0f}× less" if dense_up else "–"
            ratio = "1×" if n == "fedavg" else ratio
        name = n if len(runs) == len(seeds) else f"{n} ({len(runs)} of {len(seeds)} seeds)"
        lines.append(f"| {name} | {' | '.join(cells)} | {up} | {ratio} |")
    text = (f"`{results['command']}`\n\n{a.rounds} rounds, seeds {a.seeds} (mean ± std over "
            "seeds)\n\n" + "\n".join(lines) + "\n")
    (out / "table.md").write_text(text)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    series_r, err_r, series_u, err_u = {}, {}, {}, {}
    rounds = None
    for m in methods:
        rounds, mean, sd, cum = _curves(out, m, done(m))
        series_r[m], err_r[m] = (rounds, mean), sd
        series_u[m], err_u[m] = (cum[1:], mean[1:]), sd[1:]   # from the first round that sent
    for n in refs if rounds else []:   # flat lines: they do not train in rounds
        acc = statistics.mean(results["runs"][f"{n}-s{s}"]["final_global_accuracy"] for s in done(n))
        series_r[n] = (rounds, [acc] * len(rounds))
    band = f" (± 1 std, {len(seeds)} seeds)" if len(seeds) > 1 else ""
    title = f"{cfg.graph.dataset}, {cfg.num_clients} {cfg.graph.partition} clients, " \
            f"{cfg.graph.model.upper()}{band}"
    plot_lines(out / "accuracy_vs_round.png", series_r, "round", "global test accuracy", title,
               yerr=err_r, marker="")
    plot_lines(out / "accuracy_vs_uplink.png", series_u, "cumulative uplink, all clients (MB, log)",
               "global test accuracy", title, yerr=err_u, logx=True, marker="")
    print(text)


if __name__ == "__main__":
    main()
