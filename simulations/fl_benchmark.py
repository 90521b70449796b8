"""Benchmark the federated methods on the 100-client FashionMNIST Dirichlet(0.5) configs.

Every method runs with the same data, partitions, model, rounds and seeds
(configs/fl/bench_<method>.yaml, ``seed`` replaced by each of ``--seeds``), either through Flower's
simulation engine (``--grid engine``: ``fedticket.fl.run.run_fl``; then the same config also runs
``--plain-rounds`` rounds on the in-memory Grid to measure the engine's overhead) or through the
same strategy and ClientApp on the in-memory Grid only (``--grid memory``:
``fedticket.fl.server_app.run_in_process``, no Ray: what fits several seeds on a small machine).
Output: ``table.md`` (mean ± std over seeds), ``results.json``, two PNG plots with a band of ± one
std over seeds, and one results folder per method and seed under ``--out``.

    python simulations/fl_benchmark.py --rounds 100 --time-budget 1200 --out runs/fl_benchmark
    OMP_NUM_THREADS=1 python simulations/fl_benchmark.py --grid memory --seeds 0,1 --rounds 60 \
        --methods signscore,hidenseek,fedpm,binary-mask,fedavg-subnet,fedavg

``--time-budget`` (seconds, all methods together) cuts the number of rounds, equally for every
method, from a calibration of the slowest client (a few in-memory rounds of hidenseek) when
``--rounds`` would not fit.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
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
    p.add_argument("--seeds", default="0", help="comma list of seeds (same for every method)")
    p.add_argument("--grid", choices=("engine", "memory"), default="engine",
                   help="engine = Flower's simulation engine; memory = in-memory Grid only")
    p.add_argument("--time-budget", type=float, default=None,
                   help="seconds for all methods together; rounds are cut to fit (equal for all)")
    p.add_argument("--plain-rounds", type=int, default=5,
                   help="rounds through the in-memory Grid per method (overhead measurement)")
    p.add_argument("--configs", default=str(REPO / "configs" / "fl"), help="folder of bench_*.yaml")
    p.add_argument("--set", action="append", default=[], help="override for every method (k=v)")
    p.add_argument("--data-root", default=None)
    p.add_argument("--out", default=str(REPO / "runs" / "fl_benchmark"))
    p.add_argument("--append", action="store_true",
                   help="keep what --out already holds (same rounds) and run only the "
                        "missing method/seed pairs")
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


def _stats(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return None, None
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def _pm(xs, digits=4):
    m, sd = _stats(xs)
    return "—" if m is None else f"{m:.{digits}f} ± {sd:.{digits}f}"


def run_one(args, cfg, m: str, seed: int, rounds: int) -> dict:
    cfg = copy.deepcopy(cfg)
    cfg.rounds, cfg.seed = rounds, seed
    cfg.eval.personal_every = max(1, rounds // 5)
    folder = Path(args.out) / m / f"seed{seed}"
    t0 = time.perf_counter()
    if args.grid == "engine":
        summary = run_fl(cfg, folder, quiet=True)
    else:
        cfg.server.checkpoint, cfg.output_dir = False, str(folder)
        summary = run_in_process(cfg, folder)
    wall = time.perf_counter() - t0
    rows = read_csv(folder / "rounds.csv")
    res = {"summary": summary, "rows": rows, "wall_seconds": wall}
    if args.grid == "engine" and args.plain_rounds and seed == args.seed_list[0]:
        plain = run_plain(cfg, rounds=args.plain_rounds)
        # engine round time: configure_train -> aggregate_train, first round excluded (warm-up)
        sim_rounds = [float(r["train_wall_seconds"]) for r in rows[2:]] or \
            [float(r["train_wall_seconds"]) for r in rows[1:]]
        plain_rounds = plain["round_seconds"][1:] or plain["round_seconds"]
        # engine time not spent inside ClientApp handlers: round wall minus the handlers' busy
        # time spread over the Ray workers (a lower bound on scheduling + transport overhead)
        workers = max(1, int((cfg.sim.num_cpus or os.cpu_count() or 1) // cfg.sim.cpus_per_client))
        busy = [float(r["client_handler_seconds"]) / min(workers, cfg.clients_per_round)
                for r in (rows[2:] or rows[1:])]
        res.update({"sim_round_seconds": sum(sim_rounds) / len(sim_rounds),
                    "plain_round_seconds": sum(plain_rounds) / len(plain_rounds),
                    "engine_overhead_seconds": (sum(sim_rounds) - sum(busy)) / len(sim_rounds)})
    return res


def main(argv=None) -> int:
    args = parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    args.seed_list = [int(x) for x in args.seeds.split(",") if x.strip()]
    out = RunDir(args.out)
    saved = {}
    if args.report_only or args.append:
        saved = json.loads(out.file("results.json").read_text())
        for m, per_seed in saved.items():
            for seed, r in per_seed.items():
                r["rows"] = read_csv(Path(args.out) / m / f"seed{seed}" / "rounds.csv")
    if args.report_only:
        first = next(iter(saved.values()))
        write_report(args, saved, next(iter(first.values()))["summary"]["rounds"], None, None, out)
        return 0
    cfgs = {m: prepare(Path(args.configs) / f"bench_{m}.yaml", args.set, args.data_root)
            for m in methods}
    rounds = args.rounds
    t_start = time.perf_counter()
    calib = None
    if args.time_budget:
        probe = "hidenseek" if "hidenseek" in cfgs else methods[0]
        calib = calibrate(cfgs[probe])
        runs = len(methods) * len(args.seed_list)
        setup = SETUP_SECONDS if args.grid == "engine" else 5.0
        factor = ENGINE_FACTOR if args.grid == "engine" else 1.0
        per_run = args.time_budget / runs - setup - (args.plain_rounds * calib / len(args.seed_list)
                                                      if args.grid == "engine" else 0)
        fit = int(per_run / (factor * calib))
        print(f"calibration: {calib:.2f} s per in-memory {probe} round; {fit} rounds fit the budget")
        rounds = max(1, min(rounds, fit))
    print(f"running {len(methods)} methods x {len(args.seed_list)} seeds x {rounds} rounds "
          f"({args.grid} grid)", flush=True)

    results: dict[str, dict] = {m: per for m, per in saved.items() if m not in methods}
    results.update({m: dict(saved.get(m, {})) for m in methods})
    for seed in args.seed_list:            # seeds outer: a cut-short run still has whole seeds
        for m in methods:
            if str(seed) in results[m] or seed in results[m]:   # --append: already there
                continue
            r = run_one(args, cfgs[m], m, seed, rounds)
            results[m][seed] = r
            s = r["summary"]
            print(f"seed {seed} {m:14s} acc {s['final_global_accuracy']} (best "
                  f"{s['best_global_accuracy']})  uplink {s['uplink_bytes_per_client_round']}"
                  f" B/client/round = {s['uplink_bits_per_kept_weight']} bit/kept  "
                  f"({r['wall_seconds']:.0f} s)", flush=True)
            write_report(args, {k: v for k, v in results.items() if v}, rounds, calib,
                         time.perf_counter() - t_start, out, quiet=True)
    write_report(args, results, rounds, calib, time.perf_counter() - t_start, out)
    return 0


def _mean_curve(per_seed: dict, key) -> tuple[list, list, list]:
    """x (of the first seed), mean and std over seeds of ``key(row)`` per round."""
    runs = [r["rows"] for r in per_seed.values()]
    n = min(len(rows) for rows in runs)
    ys = [[key(rows[i]) for rows in runs] for i in range(n)]
    return ([int(x["round"]) for x in runs[0][:n]], [statistics.fmean(y) for y in ys],
            [statistics.stdev(y) if len(y) > 1 else 0.0 for y in ys])


def write_report(args, results, rounds, calib, total_seconds, out: RunDir, quiet=False) -> None:
    seeds = sorted({int(k) for per in results.values() for k in per})
    # equal uplink: the smallest total uplink (all clients, whole run) of any method, per seed
    totals = [statistics.fmean(r["summary"]["total_uplink_bytes"] for r in per.values())
              for per in results.values()]
    budget = min(totals) if totals else None
    engine = any("sim_round_seconds" in r for per in results.values() for r in per.values())
    head = ("| method | rounds | seeds | final acc | best acc | acc @ equal uplink | "
            "final personalized acc | uplink B / client / round | downlink B / client / round | "
            "uplink bits / kept weight | downlink bits / kept weight | client train s / round |")
    ncol = 12
    if engine:
        head += " engine s / round | in-memory s / round | engine overhead (est.) s / round |"
        ncol += 3
    lines = [head, "|" + "---|" * ncol]
    for m, per in results.items():
        ss = [r["summary"] for r in per.values()]
        at = [acc_at_uplink(r["rows"][1:], budget) for r in per.values()]
        row = (f"| {m} | {ss[0]['rounds']} | {len(ss)} | "
               f"{_pm([s['final_global_accuracy'] for s in ss])} | "
               f"{_pm([s['best_global_accuracy'] for s in ss])} | {_pm(at)} | "
               f"{_pm([s['final_personalized_accuracy'] for s in ss])} | "
               f"{_stats([s['uplink_bytes_per_client_round'] for s in ss])[0]:,.0f} | "
               f"{_stats([s['downlink_bytes_per_client_round'] for s in ss])[0]:,.0f} | "
               f"{_pm([s['uplink_bits_per_kept_weight'] for s in ss], 3)} | "
               f"{_pm([s['downlink_bits_per_kept_weight'] for s in ss], 3)} | "
               f"{_pm([s['client_train_seconds_per_round'] for s in ss], 2)} |")
        if engine:
            e = [r for r in per.values() if "sim_round_seconds" in r]
            row += (f" {e[0]['sim_round_seconds']:.2f} | {e[0]['plain_round_seconds']:.2f} | "
                    f"{e[0]['engine_overhead_seconds']:.2f} |" if e else " — | — | — |")
        lines.append(row)
    cmd = "python simulations/fl_benchmark.py " + " ".join(sys.argv[1:])
    if total_seconds is None:  # --report-only: keep the original command line and timing
        meta = json.loads(out.file("benchmark.json").read_text())
        cmd, total_seconds, calib = meta["command"], meta["total_seconds"], meta["calibration"]
    out.write_json("benchmark.json", {"command": cmd, "rounds": rounds, "seeds": seeds,
                                      "total_seconds": total_seconds, "calibration": calib})
    text = (f"# Federated benchmark\n\n`{cmd}`\n\n"
            f"{rounds} rounds per method, seeds {', '.join(map(str, seeds))} (mean ± std over "
            f"seeds); {total_seconds / 60:.1f} min in total"
            + (f"; calibration {calib:.2f} s per in-memory round" if calib else "")
            + (f"; equal uplink = {budget / 1e6:.2f} MB in all (the smallest total uplink)"
               if budget else "") + ".\n\n" + "\n".join(lines) + "\n")
    out.file("table.md").write_text(text)
    out.write_json("results.json", {m: {str(seed): {k: v for k, v in r.items() if k != "rows"}
                                        for seed, r in per.items()}
                                    for m, per in results.items()})
    series_r, err_r, series_u, err_u = {}, {}, {}, {}
    for m, per in results.items():
        xs, mean, sd = _mean_curve(per, lambda x: float(x["global_accuracy"]))
        series_r[m], err_r[m] = (xs, mean), sd
        rows = next(iter(per.values()))["rows"]   # x: the first seed's bytes (coded ones vary < 1 %)
        cum, mb, keep = 0, [], []
        for i, x in enumerate(rows[:len(mean)]):
            cum += int(x["uplink_bytes"])
            if cum > 0:  # log axis: from the first round that sent anything
                mb.append(cum / 1e6)
                keep.append(i)
        series_u[m] = (mb, [mean[i] for i in keep])
        err_u[m] = [sd[i] for i in keep]
    band = f" (± 1 std, {len(seeds)} seeds)" if len(seeds) > 1 else ""
    plot_lines(out.file("accuracy_vs_round.png"), series_r, "round", "global test accuracy",
               "FashionMNIST, Dirichlet(0.5), density 0.1" + band, yerr=err_r,
               marker="")
    plot_lines(out.file("accuracy_vs_uplink.png"), series_u,
               "cumulative uplink, all clients (MB, log)", "global test accuracy",
               "accuracy vs uplink" + band, yerr=err_u, logx=True, marker="")
    if not quiet:
        print(text)
        print(f"wrote {out.path}/table.md, accuracy_vs_round.png, accuracy_vs_uplink.png")


if __name__ == "__main__":
    raise SystemExit(main())
