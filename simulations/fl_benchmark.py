"""Benchmark every federated method on the 100-client FashionMNIST Dirichlet(0.5) configs.

Each method runs through Flower's simulation engine (``fedticket.fl.run.run_fl``) with the same
data, partitions, seed, model and number of rounds (configs/fl/bench_<method>.yaml), then the
same config runs a few rounds through the same strategy and ClientApp with no engine at all
(``fedticket.fl.server_app.run_in_process``: an in-memory Grid) to measure the engine's overhead
per round. Output: ``table.md``, ``results.json``, two PNG plots
and one results folder per method under ``--out``.

    python simulations/fl_benchmark.py --rounds 100 --time-budget 1200 --out runs/fl_benchmark

``--time-budget`` (seconds, all methods together) cuts the number of rounds, equally for every
method, from a calibration of the slowest client (a few in-memory rounds of hidenseek) when
``--rounds`` would not fit.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fedticket.fl.config import METHODS  # noqa: E402
from fedticket.fl.run import prepare, run_fl  # noqa: E402
from fedticket.fl.server_app import run_in_process  # noqa: E402
from fedticket.results import RunDir, plot_lines, read_csv  # noqa: E402

SETUP_SECONDS = 60.0   # per method: Ray start, SynFlow, data loading in two workers (measured here)
ENGINE_FACTOR = 1.6    # engine round / in-memory round, a conservative first guess for calibration


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", default=",".join(METHODS), help="comma list (default: all)")
    p.add_argument("--rounds", type=int, default=100, help="rounds per method (same for all)")
    p.add_argument("--time-budget", type=float, default=None,
                   help="seconds for all methods together; rounds are cut to fit (equal for all)")
    p.add_argument("--plain-rounds", type=int, default=5,
                   help="rounds through the in-memory Grid per method (overhead measurement)")
    p.add_argument("--configs", default=str(REPO / "configs" / "fl"), help="folder of bench_*.yaml")
    p.add_argument("--set", action="append", default=[], help="override for every method (k=v)")
    p.add_argument("--data-root", default=None)
    p.add_argument("--out", default=str(REPO / "runs" / "fl_benchmark"))
    p.add_argument("--report-only", action="store_true",
                   help="rewrite table.md and the plots from an existing --out folder")
    return p.parse_args(argv)


def run_plain(cfg, rounds: int) -> dict:
    """``rounds`` rounds of ``cfg`` through the in-memory Grid (no engine, no checkpoint, no
    personal evaluation); per-round wall seconds (configure -> aggregate) and client train seconds."""
    cfg = copy.deepcopy(cfg)
    cfg.rounds, cfg.eval.personal_every, cfg.server.checkpoint = rounds, 0, False
    with tempfile.TemporaryDirectory(prefix="fl-inmemory-") as tmp:
        cfg.output_dir = tmp
        run_in_process(cfg, tmp)
        rows = [r for r in read_csv(Path(tmp) / "rounds.csv") if int(r["round"]) > 0]
    return {"round_seconds": [float(r["train_wall_seconds"]) for r in rows],
            "train_seconds": [float(r["client_train_seconds"]) for r in rows]}


def calibrate(cfg, rounds: int = 2) -> float:
    """Seconds per in-memory round of ``cfg`` (the slowest client kind) after one warm-up round."""
    res = run_plain(cfg, rounds=rounds + 1)
    return sum(res["round_seconds"][1:]) / rounds


def acc_at_uplink(rows: list[dict], budget: float) -> float | None:
    """Global accuracy after the last round whose cumulative uplink fits in ``budget`` bytes."""
    cum, best = 0, None
    for r in rows:
        cum += int(r["uplink_bytes"])
        if cum <= budget:
            best = float(r["global_accuracy"])
    return best


def main(argv=None) -> int:
    args = parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    out = RunDir(args.out)
    if args.report_only:
        saved = json.loads(out.file("results.json").read_text())
        for m, r in saved.items():
            r["rows"] = read_csv(Path(args.out) / m / "rounds.csv")
        write_report(args, saved, saved[next(iter(saved))]["summary"]["rounds"], None, None, out)
        return 0
    cfgs = {m: prepare(Path(args.configs) / f"bench_{m}.yaml", args.set, args.data_root)
            for m in methods}
    rounds = args.rounds
    t_start = time.perf_counter()
    calib = None
    if args.time_budget:
        probe = "hidenseek" if "hidenseek" in cfgs else methods[0]
        calib = calibrate(cfgs[probe])
        per_method = args.time_budget / len(methods) - SETUP_SECONDS - args.plain_rounds * calib
        fit = int(per_method / (ENGINE_FACTOR * calib))
        print(f"calibration: {calib:.2f} s per in-memory {probe} round; {fit} rounds fit the budget")
        rounds = max(1, min(rounds, fit))
    print(f"running {len(methods)} methods x {rounds} rounds")

    results = {}
    for m in methods:
        cfg = cfgs[m]
        cfg.rounds = rounds
        cfg.eval.personal_every = max(1, rounds // 5)
        t0 = time.perf_counter()
        summary = run_fl(cfg, Path(args.out) / m, quiet=True)
        sim_wall = time.perf_counter() - t0
        plain = run_plain(cfg, rounds=args.plain_rounds)
        rows = read_csv(Path(args.out) / m / "rounds.csv")
        # engine round time: configure_train -> aggregate_train, first round excluded (warm-up)
        sim_rounds = [float(r["train_wall_seconds"]) for r in rows[2:]] or \
            [float(r["train_wall_seconds"]) for r in rows[1:]]
        plain_rounds = plain["round_seconds"][1:] or plain["round_seconds"]
        # engine time not spent inside ClientApp handlers: round wall minus the handlers' busy
        # time spread over the Ray workers (a lower bound on scheduling + transport overhead)
        workers = max(1, int((cfg.sim.num_cpus or os.cpu_count() or 1) // cfg.sim.cpus_per_client))
        busy = [float(r["client_handler_seconds"]) / min(workers, cfg.clients_per_round)
                for r in (rows[2:] or rows[1:])]
        results[m] = {
            "summary": summary, "rows": rows, "sim_wall_seconds": sim_wall,
            "sim_round_seconds": sum(sim_rounds) / len(sim_rounds),
            "plain_round_seconds": sum(plain_rounds) / len(plain_rounds),
            "plain_train_seconds": sum(plain["train_seconds"]) / len(plain["train_seconds"]),
            "workers": workers,
            "engine_overhead_seconds": (sum(sim_rounds) - sum(busy)) / len(sim_rounds),
        }
        print(f"{m:14s} acc {summary['final_global_accuracy']:.4f}  uplink "
              f"{summary['uplink_bytes_per_client_round']:.0f} B/client/round  "
              f"sim {results[m]['sim_round_seconds']:.2f} s/round  in-memory "
              f"{results[m]['plain_round_seconds']:.2f} s/round  ({sim_wall:.0f} s)", flush=True)

    write_report(args, results, rounds, calib, time.perf_counter() - t_start, out)
    return 0


def write_report(args, results, rounds, calib, total_seconds, out: RunDir) -> None:
    ref_up = results.get("fedavg", {}).get("summary", {}).get("uplink_bytes_per_client_round")
    hs_total = results.get("hidenseek", {}).get("summary", {}).get("total_uplink_bytes")
    head = ("| method | rounds | final acc | best acc | acc @ HideNseek's total uplink | "
            "uplink / client / round | vs FedAvg | total uplink | client train s / round | "
            "engine s / round | in-memory Grid s / round | engine minus in-memory | "
            "engine overhead (est.) s / round |")
    lines = [head, "|" + "---|" * 13]
    for m, r in results.items():
        s = r["summary"]
        up = s["uplink_bytes_per_client_round"]
        ratio = f"{ref_up / up:.0f}x less" if ref_up and m != "fedavg" else "1x"
        at = acc_at_uplink(r["rows"][1:], hs_total) if hs_total else None
        lines.append(
            f"| {m} | {s['rounds']} | {s['final_global_accuracy']:.4f} | "
            f"{s['best_global_accuracy']:.4f} | {'—' if at is None else f'{at:.4f}'} | "
            f"{up:,.0f} B ({up / 1e6:.4f} MB) | {ratio} | {s['total_uplink_bytes'] / 1e6:.2f} MB | "
            f"{s['client_train_seconds_per_round']:.2f} | {r['sim_round_seconds']:.2f} | "
            f"{r['plain_round_seconds']:.2f} | {r['sim_round_seconds'] - r['plain_round_seconds']:+.2f} | "
            f"{r['engine_overhead_seconds']:.2f} |")
    cmd = "python simulations/fl_benchmark.py " + " ".join(sys.argv[1:])
    if total_seconds is None:  # --report-only: keep the original command line and timing
        meta = json.loads(out.file("benchmark.json").read_text())
        cmd, total_seconds, calib = meta["command"], meta["total_seconds"], meta["calibration"]
    out.write_json("benchmark.json", {"command": cmd, "rounds": rounds,
                                      "total_seconds": total_seconds, "calibration": calib})
    text = (f"# Federated benchmark\n\n`{cmd}`\n\n"
            f"{rounds} rounds per method; {total_seconds / 60:.1f} min in total"
            + (f"; calibration {calib:.2f} s per in-memory hidenseek round" if calib else "")
            + ".\n\n" + "\n".join(lines) + "\n")
    out.file("table.md").write_text(text)
    out.write_json("results.json", {m: {k: v for k, v in r.items() if k != "rows"}
                                    for m, r in results.items()})
    series_r, series_u = {}, {}
    for m, r in results.items():
        xs = [int(x["round"]) for x in r["rows"]]
        ys = [float(x["global_accuracy"]) for x in r["rows"]]
        series_r[m] = (xs, ys)
        cum, mb, acc = 0, [], []
        for x, y in zip(r["rows"], ys, strict=True):
            cum += int(x["uplink_bytes"])
            if cum > 0:  # log axis: from the first round that sent anything
                mb.append(cum / 1e6)
                acc.append(y)
        series_u[m] = (mb, acc)
    plot_lines(out.file("accuracy_vs_round.png"), series_r, "round", "global test accuracy",
               "FashionMNIST, 100 clients, Dirichlet(0.5), density 0.1", marker="")
    plot_lines(out.file("accuracy_vs_uplink.png"), series_u,
               "cumulative uplink, all clients (MB, log)", "global test accuracy",
               "accuracy vs uplink", logx=True, marker="")
    print(text)
    print(f"wrote {out.path}/table.md, accuracy_vs_round.png, accuracy_vs_uplink.png")


if __name__ == "__main__":
    raise SystemExit(main())
