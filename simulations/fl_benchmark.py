"""Benchmark the federated methods on the 100-client FashionMNIST Dirichlet(0.5) configs.

Every method runs with the same data, partitions, model, rounds and seeds
(configs/fl/bench_<method>.yaml, ``seed`` replaced by each of ``--seeds``), either through Flower's
simulation engine (``--grid engine``: ``fedticket.fl.run.run_fl``; then the same config also runs
``--plain-rounds`` rounds on the in-memory Grid to measure the engine's overhead) or through the
same strategy and ClientApp on the in-memory Grid only (``--grid memory``:
``fedticket.fl.server_app.run_in_process``, no Ray: what fits several seeds on a small machine).
Output: ``table.md`` (mean ± std over seeds; then the equal-uplink and uplink-to-reach tables),
``results.json``, two PNG plots with a band of ± one std over seeds, and one results folder per
row and seed under ``--out``.

    python simulations/fl_benchmark.py --rounds 100 --time-budget 1200 --out runs/fl_benchmark
    OMP_NUM_THREADS=1 python simulations/fl_benchmark.py --grid memory --seeds 0,1 --rounds 60 \
        --methods signscore,hidenseek,fedpm,binary-mask,fedavg-subnet,fedavg

``--time-budget`` (seconds, all methods together) cuts the number of rounds, equally for every
method, from a calibration of the slowest client (a few in-memory rounds of hidenseek) when
``--rounds`` would not fit.

Extra rows: ``--variant LABEL:METHOD:KEY=V,KEY=V`` runs bench_METHOD.yaml with those overrides
(after the ``--set`` ones) as a row named LABEL, in ``--out``/LABEL/seed<s>; repeatable:

    OMP_NUM_THREADS=1 python simulations/fl_benchmark.py --grid memory --seeds 0,1,2 --rounds 50 \
        --methods fedpm --variant fedpm-keep5:fedpm:fedpm.keep_priors=true,fedpm.prior_reset_every=5 \
        --variant fedavg-subnet-2ep:fedavg-subnet:train.local_epochs=2 --append --out runs/b

``--append`` keeps what ``--out`` holds and runs only the missing row/seed pairs (a run cut short
restarts from its last whole method/seed). ``--include DIR[:PREFIX]`` adds the rows of another
benchmark folder to the report (their labels prefixed with PREFIX); with ``--report-only`` that
merges another session's run into this table and these plots without rerunning anything:

    python simulations/fl_benchmark.py --report-only --out runs/b --include runs/other:other-

Equal uplink bits: ``--uplink-ref LABEL`` (default signscore) and ``--uplink-at R1,R2,...`` give,
for each row, the global accuracy after its last round whose cumulative uplink (all clients) is
within the reference row's cumulative uplink after round R (mean over its seeds).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
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
from fedticket.results import RunDir, read_csv  # noqa: E402

SETUP_SECONDS = 60.0   # per method: Ray start, SynFlow, data loading in two workers (measured here)
ENGINE_FACTOR = 1.6    # engine round / in-memory round, a conservative first guess for calibration
LABEL_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")   # a row label is also a folder name


def parse_variant(text: str) -> tuple[str, str, list[str]]:
    """``LABEL:METHOD:KEY=V,KEY=V`` -> (label, method, ["KEY=V", ...]) (argparse type)."""
    parts = text.split(":", 2)
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not LABEL:METHOD:KEY=V[,KEY=V...] (e.g. fsub2:fedavg-subnet:train.local_epochs=2)")
    label, method, sets = (x.strip() for x in parts)
    if not LABEL_RE.fullmatch(label):
        raise argparse.ArgumentTypeError(
            f"variant label {label!r} must be letters, digits, '.', '_', '+' or '-' (it names a folder)")
    if label in METHODS:
        raise argparse.ArgumentTypeError(
            f"variant label {label!r} is a method name; give the variant its own label")
    if method not in METHODS:
        raise argparse.ArgumentTypeError(
            f"variant {label!r}: unknown method {method!r}; choose one of {', '.join(METHODS)}")
    overrides = [kv.strip() for kv in sets.split(",") if kv.strip()]
    bad = [kv for kv in overrides if "=" not in kv]
    if not overrides or bad:
        raise argparse.ArgumentTypeError(
            f"variant {label!r}: overrides must be KEY=V separated by commas, got {sets!r}")
    return label, method, overrides


def parse_include(text: str) -> tuple[Path, str]:
    """``DIR[:PREFIX]`` -> (folder, label prefix) (argparse type)."""
    folder, _, prefix = text.partition(":")
    if not (Path(folder) / "results.json").is_file():
        raise argparse.ArgumentTypeError(
            f"{folder!r} holds no results.json; point --include at a fl_benchmark.py --out folder")
    if prefix and not LABEL_RE.fullmatch(prefix):
        raise argparse.ArgumentTypeError(f"--include prefix {prefix!r}: letters, digits, '.', '_', '+', '-'")
    return Path(folder), prefix


def _int_list(text: str) -> list[int]:
    try:
        xs = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma list of integers") from None
    if not xs or min(xs) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give rounds >= 1, e.g. 10,25,50")
    return xs


def _acc_list(text: str) -> list[float]:
    try:
        xs = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma list of accuracies") from None
    if not xs or not all(0 < x <= 1 for x in xs):
        raise argparse.ArgumentTypeError(f"{text!r}: give accuracies in (0, 1], e.g. 0.7,0.75")
    return xs


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", default=",".join(METHODS), help="comma list (default: all)")
    p.add_argument("--variant", action="append", default=[], type=parse_variant,
                   metavar="LABEL:METHOD:KEY=V,...",
                   help="an extra row: bench_METHOD.yaml with these overrides (after --set), named "
                        "LABEL (a folder under --out); values cannot hold commas; repeatable")
    p.add_argument("--rounds", type=int, default=100, help="rounds per method (same for all)")
    p.add_argument("--seeds", default="0", help="comma list of seeds (same for every method)")
    p.add_argument("--personal-every", type=int, default=None,
                   help="personalized evaluation every N rounds (default: rounds // 5); give the "
                        "earlier run's N to compare runs of different lengths round by round")
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
                        "missing row/seed pairs")
    p.add_argument("--report-only", action="store_true",
                   help="rewrite table.md and the plots from an existing --out folder")
    p.add_argument("--include", action="append", default=[], type=parse_include, metavar="DIR[:PREFIX]",
                   help="add the rows of another benchmark folder DIR to the report, labels "
                        "prefixed with PREFIX (they replace rows of the same label); repeatable")
    p.add_argument("--uplink-ref", default="signscore",
                   help="row whose cumulative uplink sets the equal-uplink budgets (default "
                        "signscore; if absent: the row with the smallest total uplink)")
    p.add_argument("--uplink-at", type=_int_list, default=[10, 25, 50],
                   help="rounds R of the reference row whose cumulative uplink is a budget "
                        "(default 10,25,50; rounds past its run are dropped)")
    p.add_argument("--reach", type=_acc_list, default=[0.70, 0.75, 0.78],
                   help="accuracies: the cumulative uplink each row needed to first reach each "
                        "(default 0.70,0.75,0.78)")
    p.add_argument("--acc-at", type=_int_list, default=[],
                   help="rounds R: also a table of each row's global and personalized accuracy "
                        "after round R (mean ± std over its seeds), e.g. 50,100,150,200")
    p.add_argument("--plot-dir", default=None,
                   help="also write the two plots there as fl_bench_accuracy_vs_round.png and "
                        "fl_bench_accuracy_vs_uplink.png (e.g. docs/img)")
    args = p.parse_args(argv)
    labels = [v[0] for v in args.variant]
    if len(set(labels)) != len(labels):
        p.error(f"--variant labels must differ, got {', '.join(labels)}")
    unknown = [m for m in args.methods.split(",") if m.strip() and m.strip() not in METHODS]
    if unknown:
        p.error(f"--methods: unknown {', '.join(unknown)}; choose from {', '.join(METHODS)}")
    if args.personal_every is not None and args.personal_every < 1:
        p.error(f"--personal-every must be >= 1, got {args.personal_every}")
    if args.append and not args.report_only and not (Path(args.out) / "results.json").is_file():
        p.error(f"--append: {args.out} holds no results.json yet; run once without --append")
    if args.report_only and not (Path(args.out) / "results.json").is_file():
        p.error(f"--report-only: {args.out} holds no results.json")
    return args


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


def cumulative_uplink(rows: list[dict]) -> list[int]:
    """Cumulative uplink bytes (all clients) after each row of rounds.csv (round 0 included)."""
    out, cum = [], 0
    for r in rows:
        cum += int(r["uplink_bytes"])
        out.append(cum)
    return out


def acc_at_uplink(rows: list[dict], budget: float) -> tuple[float | None, int | None]:
    """Global accuracy and round number after the last training round whose cumulative uplink
    fits in ``budget`` bytes; (None, None) if not even round 1 fits."""
    best = (None, None)
    for r, cum in zip(rows, cumulative_uplink(rows)):
        if int(r["round"]) > 0 and cum <= budget:
            best = (float(r["global_accuracy"]), int(r["round"]))
    return best


def uplink_budgets(ref: dict, at_rounds: list[int]) -> dict[int, dict[str, float]]:
    """{R: {seed: the reference row's cumulative uplink after round R in that seed, and "mean":
    over its seeds}}, for the R all its runs reach."""
    per_seed = {str(s): dict(zip((int(x["round"]) for x in r["rows"]), cumulative_uplink(r["rows"])))
                for s, r in ref.items()}
    out = {}
    for R in at_rounds:
        if all(R in c for c in per_seed.values()):
            out[R] = {s: float(c[R]) for s, c in per_seed.items()}
            out[R]["mean"] = statistics.fmean(c[R] for c in per_seed.values())
    return out


def _budget(budgets: dict[str, float], seed) -> float:
    """The same seed's budget (same partitions and client draws), else the mean over seeds."""
    return budgets.get(str(seed), budgets["mean"])


def uplink_to_reach(rows: list[dict], target: float) -> tuple[float | None, int | None]:
    """Cumulative uplink bytes (all clients) and round when the global accuracy first reached
    ``target``; (None, None) if it never did."""
    for r, cum in zip(rows, cumulative_uplink(rows)):
        if int(r["round"]) > 0 and float(r["global_accuracy"]) >= target:
            return float(cum), int(r["round"])
    return None, None


def reach_table(results: dict, targets: list[float]) -> str:
    """Markdown table: the uplink MB each row needed to first reach each accuracy (mean ± std
    over the seeds that reached it, with the round range); "k/n seeds" when not all did."""
    lines = ["| method | " + " | ".join(f"MB to reach {t:g}" for t in targets) + " |",
             "|" + "---|" * (len(targets) + 1)]
    for m, per in results.items():
        cells = []
        for t in targets:
            got = [uplink_to_reach(r["rows"], t) for r in per.values()]
            hit = [(b, rr) for b, rr in got if b is not None]
            if not hit:
                cells.append("not reached")
                continue
            mb = _stats([b / 1e6 for b, _ in hit])
            rs = [rr for _, rr in hit]
            span = f"{min(rs)}" if min(rs) == max(rs) else f"{min(rs)}–{max(rs)}"
            digits = 3 if mb[0] < 10 else 1
            cell = f"{mb[0]:.{digits}f} ± {mb[1]:.{digits}f} (round {span})"
            if len(hit) < len(got):
                cell += f", {len(hit)}/{len(got)} seeds"
            cells.append(cell)
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def acc_at_rounds_table(results: dict, at_rounds: list[int]) -> str:
    """Markdown table: each row's global, then personalized, accuracy after round R (mean ± std
    over its seeds, with how many); "—" where no seed has the round (or no personal evaluation
    there), "k/n seeds" where only some do."""
    def cell(per, R, key):
        vals = [next((r[key] for r in x["rows"] if int(r["round"]) == R and r.get(key)), None)
                for x in per.values()]
        got = [float(v) for v in vals if v is not None]
        if not got:
            return "—"
        return _pm(got) + (f", {len(got)}/{len(vals)} seeds" if len(got) < len(vals) else "")

    cols = ([f"global @ {R}" for R in at_rounds] + [f"personalized @ {R}" for R in at_rounds])
    lines = ["| method | seeds | " + " | ".join(cols) + " |", "|" + "---|" * (len(cols) + 2)]
    for m, per in results.items():
        cells = ([cell(per, R, "global_accuracy") for R in at_rounds]
                 + [cell(per, R, "personalized_accuracy") for R in at_rounds])
        lines.append(f"| {m} | {len(per)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _stats(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return None, None
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def _pm(xs, digits=4):
    m, sd = _stats(xs)
    return "—" if m is None else f"{m:.{digits}f} ± {sd:.{digits}f}"


def run_one(args, cfg, label: str, seed: int, rounds: int) -> dict:
    cfg = copy.deepcopy(cfg)
    cfg.rounds, cfg.seed = rounds, seed
    cfg.eval.personal_every = args.personal_every or max(1, rounds // 5)
    folder = Path(args.out).resolve() / label / f"seed{seed}"
    t0 = time.perf_counter()
    if args.grid == "engine":
        summary = run_fl(cfg, folder, quiet=True)
    else:
        cfg.server.checkpoint, cfg.output_dir = False, str(folder)
        summary = run_in_process(cfg, folder)
    wall = time.perf_counter() - t0
    rows = read_csv(folder / "rounds.csv")
    res = {"summary": summary, "rows": rows, "wall_seconds": wall, "folder": str(folder)}
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


def load_results(folder: Path, prefix: str = "") -> dict:
    """results.json of a benchmark folder with each run's rounds.csv (from its recorded folder,
    else ``folder``/label/seed<s>, for folders written before runs recorded theirs)."""
    saved = json.loads((folder / "results.json").read_text())
    out = {}
    for label, per_seed in saved.items():
        for seed, r in per_seed.items():
            run = Path(r.get("folder") or folder.resolve() / label / f"seed{seed}")
            r["folder"], r["rows"] = str(run), read_csv(run / "rounds.csv")
        out[prefix + label] = per_seed
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    rows_spec = [(m.strip(), m.strip(), []) for m in args.methods.split(",") if m.strip()]
    rows_spec += args.variant
    args.seed_list = [int(x) for x in args.seeds.split(",") if x.strip()]
    out = RunDir(args.out)
    saved = {}
    if args.report_only or args.append:
        saved = load_results(Path(args.out))
    included = {}
    for folder, prefix in args.include:
        rows = load_results(folder, prefix)
        clash = sorted(set(rows) & (set(saved) | set(included)))
        if clash and Path(folder).resolve() != Path(args.out).resolve():
            print(f"--include {folder}: its rows {', '.join(clash)} replace the rows of the same "
                  "label (give a PREFIX, DIR:PREFIX, to keep both)", file=sys.stderr)
        included.update(rows)
    if args.report_only:
        saved.update(included)
        first = next(iter(saved.values()))
        write_report(args, saved, next(iter(first.values()))["summary"]["rounds"], None, None, out)
        return 0
    cfgs = {label: prepare(Path(args.configs) / f"bench_{m}.yaml", [*args.set, *sets], args.data_root)
            for label, m, sets in rows_spec}
    labels = [label for label, _, _ in rows_spec]
    rounds = args.rounds
    t_start = time.perf_counter()
    calib = None
    if args.time_budget:
        probe = "hidenseek" if "hidenseek" in cfgs else labels[0]
        calib = calibrate(cfgs[probe])
        runs = len(labels) * len(args.seed_list)
        setup = SETUP_SECONDS if args.grid == "engine" else 5.0
        factor = ENGINE_FACTOR if args.grid == "engine" else 1.0
        per_run = args.time_budget / runs - setup - (args.plain_rounds * calib / len(args.seed_list)
                                                      if args.grid == "engine" else 0)
        fit = int(per_run / (factor * calib))
        print(f"calibration: {calib:.2f} s per in-memory {probe} round; {fit} rounds fit the budget")
        rounds = max(1, min(rounds, fit))
    print(f"running {len(labels)} rows x {len(args.seed_list)} seeds x {rounds} rounds "
          f"({args.grid} grid)", flush=True)

    results: dict[str, dict] = {m: per for m, per in saved.items() if m not in labels}
    results.update({m: dict(saved.get(m, {})) for m in labels})
    results.update(included)
    for seed in args.seed_list:            # seeds outer: a cut-short run still has whole seeds
        for label, method, sets in rows_spec:
            if str(seed) in results[label] or seed in results[label]:   # --append: already there
                continue
            r = run_one(args, cfgs[label], label, seed, rounds)
            r.update({"method": method, "overrides": [*args.set, *sets]})
            results[label][str(seed)] = r
            s = r["summary"]
            print(f"seed {seed} {label:14s} acc {s['final_global_accuracy']} (best "
                  f"{s['best_global_accuracy']})  uplink {s['uplink_bytes_per_client_round']:.0f}"
                  f" B/client/round = {s['uplink_bits_per_kept_weight']:.3f} bit/kept  "
                  f"({r['wall_seconds']:.0f} s)", flush=True)
            write_report(args, {k: v for k, v in results.items() if v}, rounds, calib,
                         time.perf_counter() - t_start, out, quiet=True)
    write_report(args, {k: v for k, v in results.items() if v}, rounds, calib,
                 time.perf_counter() - t_start, out)
    return 0


def _mean_curve(per_seed: dict, key) -> tuple[list, list, list]:
    """x (of the first seed), mean and std over seeds of ``key(row)`` per round."""
    runs = [r["rows"] for r in per_seed.values()]
    n = min(len(rows) for rows in runs)
    ys = [[key(rows[i]) for rows in runs] for i in range(n)]
    return ([int(x["round"]) for x in runs[0][:n]], [statistics.fmean(y) for y in ys],
            [statistics.stdev(y) if len(y) > 1 else 0.0 for y in ys])


def _reference(results: dict, wanted: str) -> str:
    if wanted in results:
        return wanted
    return min(results, key=lambda m: statistics.fmean(r["summary"]["total_uplink_bytes"]
                                                        for r in results[m].values()))


def equal_uplink_table(results: dict, ref: str, at_rounds: list[int]) -> tuple[str, dict]:
    """Markdown table: each row's accuracy (mean ± std over seeds) and the round it had reached
    when its cumulative uplink was last within the reference's after round R."""
    budgets = uplink_budgets(results[ref], at_rounds)
    if not budgets:   # a short run: its last round common to all seeds
        budgets = uplink_budgets(results[ref], [min(len(r["rows"]) - 1 for r in results[ref].values())])
    head = "| method | " + " | ".join(f"@ {ref} R={R} ({b['mean'] / 1e6:.3f} MB)"
                                      for R, b in budgets.items()) + " |"
    lines = [head, "|" + "---|" * (len(budgets) + 1)]
    cells = {}
    for m, per in results.items():
        row = []
        for R, b in budgets.items():
            got = [acc_at_uplink(r["rows"], _budget(b, seed)) for seed, r in per.items()]
            accs = [a for a, _ in got]
            reached = [rr for _, rr in got if rr is not None]
            cells[(m, R)] = _stats(accs)
            if not reached:
                row.append("— (not one round)")
            else:
                span = (f"{min(reached)}" if min(reached) == max(reached)
                        else f"{min(reached)}–{max(reached)}")
                row.append(f"{_pm(accs)} (round {span})")
        lines.append(f"| {m} | " + " | ".join(row) + " |")
    return "\n".join(lines), {"reference": ref, "budgets_bytes": budgets,
                              "accuracy": {f"{m}@{R}": v for (m, R), v in cells.items()}}


ROW_ORDER = ("signscore", "hidenseek", "fedpm", "binary-mask", "fedavg-subnet", "fedavg")


def ordered(results: dict) -> dict:
    """Rows grouped by method (sign methods first, dense FedAvg last), each method's own row
    before its variants and included rows, so the table reads the same however it was built."""
    def key(label):
        method = next(iter(results[label].values()))["summary"].get("method", label)
        rank = ROW_ORDER.index(method) if method in ROW_ORDER else len(ROW_ORDER)
        return rank, label != method, label
    return {m: results[m] for m in sorted(results, key=key)}


def write_report(args, results, rounds, calib, total_seconds, out: RunDir, quiet=False) -> None:
    results = ordered(results)
    seeds = sorted({int(k) for per in results.values() for k in per})
    ref = _reference(results, args.uplink_ref)
    totals = {str(s): float(r["summary"]["total_uplink_bytes"]) for s, r in results[ref].items()}
    totals["mean"] = statistics.fmean(totals.values())
    budget = totals["mean"]
    engine = any("sim_round_seconds" in r for per in results.values() for r in per.values())
    head = ("| method | rounds | seeds | final acc | best acc | best round | "
            f"acc @ {ref}'s total uplink | final personalized acc | uplink B / client / round | "
            "downlink B / client / round | uplink bits / kept weight | downlink bits / kept weight | "
            "client train s / round |")
    ncol = 13
    if engine:
        head += " engine s / round | in-memory s / round | engine overhead (est.) s / round |"
        ncol += 3
    lines = [head, "|" + "---|" * ncol]
    for m, per in results.items():
        ss = [r["summary"] for r in per.values()]
        at = [acc_at_uplink(r["rows"], _budget(totals, seed))[0] for seed, r in per.items()]
        best_rounds = [max((r for r in x["rows"] if int(r["round"]) > 0),
                           key=lambda r: float(r["global_accuracy"]))["round"] for x in per.values()]
        row = (f"| {m} | {ss[0]['rounds']} | {len(ss)} | "
               f"{_pm([s['final_global_accuracy'] for s in ss])} | "
               f"{_pm([s['best_global_accuracy'] for s in ss])} | {', '.join(best_rounds)} | {_pm(at)} | "
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
    eq_text, eq = equal_uplink_table(results, ref, args.uplink_at)
    overrides = {m: next(iter(per.values())).get("overrides") for m, per in results.items()}
    overrides = {m: o for m, o in overrides.items() if o}
    meta = json.loads(out.file("benchmark.json").read_text()) if out.file("benchmark.json").is_file() else {}
    commands = meta.get("commands") or ([meta["command"]] if "command" in meta else [])
    if total_seconds is None:  # --report-only: keep the runs' command lines and timing
        total_seconds, calib = meta.get("total_seconds") or 0.0, meta.get("calibration")
    else:
        cmd = "python simulations/fl_benchmark.py " + " ".join(sys.argv[1:])
        if not commands or commands[-1] != cmd:
            commands.append(cmd)
    out.write_json("benchmark.json", {"command": commands[-1] if commands else "", "commands": commands,
                                      "rounds": rounds, "seeds": seeds,
                                      "total_seconds": total_seconds, "calibration": calib,
                                      "equal_uplink": eq})
    runs_min = sum(r.get("wall_seconds", 0.0) for per in results.values() for r in per.values()) / 60
    text = ("# Federated benchmark\n\n" + "".join(f"`{c}`\n\n" for c in commands)
            + f"{rounds} rounds per method, seeds {', '.join(map(str, seeds))} (mean ± std over "
            f"seeds); {runs_min:.1f} min of runs in all (sum of each run's wall time)"
            + (f"; calibration {calib:.2f} s per in-memory round" if calib else "")
            + f"; \"acc @ {ref}'s total uplink\": after the last round within {budget / 1e6:.3f} MB "
            "(all clients, whole run, mean over its seeds; each seed is held to the same seed's bytes; "
            "— : not one round fits).\n\n"
            + "\n".join(lines) + "\n"
            + ("\nRows with overrides: " + "; ".join(f"{m}: {' '.join(o)}" for m, o in overrides.items())
               + "\n" if overrides else "")
            + f"\n## Equal uplink bits\n\nAccuracy after the last round whose cumulative uplink "
            f"(all clients) is within {ref}'s cumulative uplink after round R in the same seed (the header: "
            "the mean over its seeds); "
            "in brackets the round each row had reached (range over seeds).\n\n" + eq_text + "\n"
            + "\nThe other way round: the cumulative uplink (all clients, MB) each row needed to "
            "first reach a global accuracy (mean ± std over the seeds that reached it).\n\n"
            + reach_table(results, args.reach) + "\n"
            + (f"\n## Accuracy at rounds {', '.join(map(str, args.acc_at))}\n\nGlobal, then "
               "personalized (10 clients' local test splits, where evaluated that round), after "
               "round R; mean ± std over each row's seeds.\n\n"
               + acc_at_rounds_table(results, args.acc_at) + "\n" if args.acc_at else ""))
    out.file("table.md").write_text(text)
    out.write_json("results.json", {m: {str(seed): {k: v for k, v in r.items() if k != "rows"}
                                        for seed, r in per.items()}
                                    for m, per in results.items()})
    paths = [out.file("accuracy_vs_round.png"), out.file("accuracy_vs_uplink.png")]
    marks = {R: b["mean"] / 1e6 for R, b in eq["budgets_bytes"].items()}
    plot_benchmark(results, paths[0], paths[1], len(seeds), ref, marks)
    if args.plot_dir:
        d = Path(args.plot_dir)
        d.mkdir(parents=True, exist_ok=True)
        plot_benchmark(results, d / "fl_bench_accuracy_vs_round.png",
                       d / "fl_bench_accuracy_vs_uplink.png", len(seeds), ref, marks)
    if not quiet:
        print(text)
        print(f"wrote {out.path}/table.md, accuracy_vs_round.png, accuracy_vs_uplink.png"
              + (f" (and the plots in {args.plot_dir})" if args.plot_dir else ""))


def plot_benchmark(results: dict, path_round: Path, path_uplink: Path, n_seeds: int,
                   ref: str = "", marks: dict[int, float] | None = None) -> None:
    """Accuracy vs round and vs cumulative uplink (log x), mean over seeds with a ± 1 std band;
    a method's variants and included rows in its lighter colour, dashed; ``marks`` ({R: MB}) draws the
    equal-uplink budgets of the reference row ``ref`` on the uplink plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullFormatter

    colours = plt.get_cmap("tab20").colors   # pairs: a method's dark colour, its variants' light one
    n_variants: dict[str, int] = {}
    counts = {len(per) for per in results.values()}
    mixed = len(counts) > 1   # rows with different seed counts: say each row's in its label
    band = ((", band ± 1 std over each row's seeds (none for 1 seed)" if mixed
             else f", band ± 1 std over {n_seeds} seeds") if max(counts) > 1 else "")
    figs = {k: plt.subplots(figsize=(9.0, 5.0), dpi=120) for k in ("round", "uplink")}
    for i, (m, per) in enumerate(results.items()):
        xs, mean, sd = _mean_curve(per, lambda x: float(x["global_accuracy"]))
        # uplink x: each round's cumulative bytes averaged over seeds (coded payloads vary < 1 %)
        cums = [cumulative_uplink(r["rows"])[:len(mean)] for r in per.values()]
        mb = [statistics.fmean(c[j] for c in cums) / 1e6 for j in range(len(mean))]
        method = next(iter(per.values()))["summary"].get("method", m)
        rank = ROW_ORDER.index(method) if method in ROW_ORDER else len(ROW_ORDER) + i
        k = n_variants[method] = n_variants.get(method, -1) + 1   # 0 = the method's own row
        style = dict(color=colours[(2 * rank + (k > 0)) % len(colours)],
                     linestyle=("-", "--", ":", "-.")[min(k, 3)], linewidth=1.6,
                     label=f"{m} ({len(per)} seed{'s' if len(per) > 1 else ''})" if mixed else m)
        for key, x in (("round", xs), ("uplink", mb)):
            keep = [j for j in range(len(mean)) if key == "round" or x[j] > 0]  # log x: skip 0 bytes
            ax = figs[key][1]
            ax.plot([x[j] for j in keep], [mean[j] for j in keep], **style)
            ax.fill_between([x[j] for j in keep], [mean[j] - sd[j] for j in keep],
                            [mean[j] + sd[j] for j in keep], color=style["color"], alpha=0.15,
                            linewidth=0)
    setting = "FashionMNIST, LeNet-300-100 at density 0.1, 100 clients (10 a round), Dirichlet(0.5)"
    for key, path, xlabel in (("round", path_round, "round"),
                              ("uplink", path_uplink, "cumulative uplink, all clients (MB, log scale)")):
        fig, ax = figs[key]
        if key == "uplink":
            ax.set_xscale("log")
            # plain numbers on the decades only: minor labels (2x10^-2 ...) collide
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.xaxis.set_minor_formatter(NullFormatter())
            for R, mb in (marks or {}).items():
                ax.axvline(mb, color="grey", linestyle=":", linewidth=1)
                ax.annotate(f"{ref} R={R}", (mb, 0.01), xycoords=("data", "axes fraction"),
                            rotation=90, fontsize=7, color="grey", ha="right", va="bottom")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("global test accuracy")
        ax.set_title(f"Accuracy vs {'round' if key == 'round' else 'uplink bytes'}{band}\n{setting}",
                     fontsize=9)
        ax.grid(alpha=0.3, which="both")
        # outside the axes: nine curves end in the top right, where a legend inside would sit
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
