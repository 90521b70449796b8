"""Thousands of virtual clients: peak memory, setup time and seconds per round against num_clients.

Each size runs the real command a user runs (``fedticket fl run`` on the quickstart config,
Flower's simulation runtime on a private SuperLink, Ray) with 10 clients sampled a round and the
whole training set partitioned (``data.train_subset=null``), so only the number of clients that
are *not* training changes between rows. Measured from outside: the peak resident memory of the
whole process tree (the CLI, the SuperLink, flwr-simulation, Ray's processes and workers; summed
RSS, sampled every 0.2 s), the setup time (launch -> the server's round-0 evaluation line in
server.log: SuperLink, Ray, node registration, ticket, discovery) and the seconds per round
(round-0 line -> last round's line, divided by the rounds; also round 1 alone, which warms
the workers, and the later rounds).

    python simulations/fl_scale_benchmark.py --clients 100 1000 10000 --rounds 3 --out runs/fl_scale
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", type=int, nargs="+", default=[100, 1000, 10000])
    p.add_argument("--per-round", type=int, default=10)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--config", default=str(REPO / "configs/fl/quickstart.yaml"))
    p.add_argument("--set", nargs="*", default=[], help="extra overrides for every run")
    p.add_argument("--out", default="runs/fl_scale")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds per run")
    return p.parse_args(argv)


def tree_rss(root: psutil.Process) -> int:
    total = 0
    try:
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0
    for proc in procs:
        try:
            total += proc.memory_info().rss
        except psutil.Error:
            pass
    return total


def round_times(server_log: Path) -> dict[int, float]:
    """round -> wall time of its 'round R: global accuracy' line."""
    out = {}
    for line in server_log.read_text(errors="replace").splitlines():
        if "INFO round " in line and ": global accuracy" in line:
            stamp = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
            out[int(line.split("INFO round ", 1)[1].split(":", 1)[0])] = stamp
    return out


def run_one(n: int, args, out: Path) -> dict:
    run_dir = out / f"clients-{n}"
    sets = [f"num_clients={n}", f"clients_per_round={args.per_round}",
            "data.train_subset=null", f"rounds={args.rounds}", "eval.personal_every=0",
            *args.set]
    cmd = [sys.executable, "-m", "fedticket.cli", "fl", "run", "-c", args.config, "--quiet",
           "--overwrite", "--out", str(run_dir)]
    for item in sets:
        cmd += ["--set", item]
    t0 = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    root = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, tree_rss(root))
        if time.time() - t0 > args.timeout:
            proc.kill()
            raise RuntimeError(f"{n} clients: no result after {args.timeout:g} s")
        time.sleep(0.2)
    text = proc.stdout.read()
    if proc.returncode != 0:
        raise RuntimeError(f"{n} clients: exit {proc.returncode}: {text[-2000:]}")
    times = round_times(run_dir / "server.log")
    summary = json.loads((run_dir / "summary.json").read_text())
    last = max(times)
    return {"clients": n, "per_round": args.per_round, "rounds": last,
            "peak_rss_gb": peak / 2**30, "setup_s": times[0] - t0,
            "s_per_round": (times[last] - times[0]) / last,
            # round 1 also warms the workers (data, partitioner, ticket); later rounds don't
            "round1_s": times[1] - times[0],
            "later_s_per_round": (times[last] - times[1]) / (last - 1) if last > 1 else None,
            "train_phase_s": summary["round_wall_seconds"],
            "total_s": time.time() - t0,
            "final_accuracy": summary["final_global_accuracy"]}


def table(rows: list[dict]) -> str:
    lines = ["| clients | sampled / round | rounds | peak RSS, process tree (GB) | setup (s) | "
             "s / round | round 1 (s) | rounds 2+ (s / round) | total (s) |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['clients']:,} | {r['per_round']} | {r['rounds']} | "
                     f"{r['peak_rss_gb']:.2f} | {r['setup_s']:.1f} | {r['s_per_round']:.2f} | "
                     f"{r['round1_s']:.2f} | {r['later_s_per_round'] or float('nan'):.2f} | "
                     f"{r['total_s']:.1f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION", "1")
    rows = []
    for n in args.clients:
        rows.append(run_one(n, args, out))
        print(json.dumps(rows[-1]), flush=True)
        (out / "results.json").write_text(json.dumps(rows, indent=2))
    text = table(rows)
    (out / "table.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
