"""Thousands of virtual clients: peak memory, setup time and seconds per round against num_clients.

Each size runs the real command a user runs (``fedticket fl run`` on the quickstart config,
Flower's simulation runtime on a private SuperLink, Ray) with 10 clients sampled a round and the
whole training set partitioned (``data.train_subset=null``), so only the number of clients that
are *not* training changes between rows. Measured from outside, on the whole process tree (the
CLI, the SuperLink, flwr-simulation, Ray's processes and workers), sampled every 0.2 s: the peak
of the summed resident memory, and CPU seconds per part (Flower's simulation runtime process,
the Ray ClientApp actors, the rest). From server.log's round lines: the setup (launch -> the
server's round-0 evaluation: SuperLink, Ray, node registration, ticket), round 1 alone (it starts
every ClientApp actor: imports, the training set, the partitioner; its actor CPU seconds are
shown beside it) and the steady state (round 1 -> the last round, per round, with the CPU
seconds per round of the flwr-simulation process, whose dispatcher sweeps every node's queue).
The load average at the start of each run is printed: the seconds are wall-clock seconds on a
shared machine; CPU seconds are the robust comparison.

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


def group_of(proc: psutil.Process) -> str:
    """Which part of the run a process is: Flower's simulation runtime (the ServerApp and the
    dispatcher that feeds the actors), a Ray ClientApp actor, or the rest (CLI, SuperLink,
    Ray's own daemons)."""
    try:
        cmd = " ".join(proc.cmdline())
    except psutil.Error:
        return "rest"
    if "flwr-simulation" in cmd:
        return "sim"
    if cmd.startswith("ray::") and "Actor" in cmd:
        return "actor"
    return "rest"


class TreeSampler:
    """Summed RSS and CPU seconds per group of the whole process tree, sampled over time."""

    def __init__(self, root: psutil.Process):
        self.root = root
        self.cpu: dict[int, tuple[str, float]] = {}    # pid -> (group, last CPU seconds seen)
        self.groups: dict[int, str] = {}
        self.nice: dict[str, set[int]] = {}
        self.samples: list[tuple[float, dict[str, float]]] = []
        self.peak_rss = 0

    def sample(self) -> None:
        try:
            procs = [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            return
        rss = 0
        for proc in procs:
            try:
                with proc.oneshot():
                    rss += proc.memory_info().rss
                    t = proc.cpu_times()
                    if proc.pid not in self.groups or self.groups[proc.pid] == "rest":
                        # a Ray worker renames itself once it hosts an actor
                        self.groups[proc.pid] = group_of(proc)
                    group = self.groups[proc.pid]
                    self.nice.setdefault(group, set()).add(proc.nice())
                self.cpu[proc.pid] = (group, t.user + t.system)
            except psutil.Error:
                pass
        self.peak_rss = max(self.peak_rss, rss)
        totals: dict[str, float] = {"sim": 0.0, "actor": 0.0, "rest": 0.0}
        for group, sec in self.cpu.values():   # exited processes keep their last count
            totals[group] += sec
        self.samples.append((time.time(), totals))

    def cpu_at(self, stamp: float) -> dict[str, float]:
        """CPU seconds per group at the last sample before ``stamp``."""
        before = [tot for t, tot in self.samples if t <= stamp]
        return before[-1] if before else {"sim": 0.0, "actor": 0.0, "rest": 0.0}


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
    load = os.getloadavg()[0]
    t0 = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    sampler = TreeSampler(psutil.Process(proc.pid))
    while proc.poll() is None:
        sampler.sample()
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
    if last < 2:
        raise RuntimeError("--rounds must be at least 2: round 1 warms the workers, the "
                           "steady state is measured on the rounds after it")
    c0, c1, cl = (sampler.cpu_at(times[r]) for r in (0, 1, last))
    return {"clients": n, "per_round": args.per_round, "rounds": last,
            "load_avg_at_start": load,
            "peak_rss_gb": sampler.peak_rss / 2**30,
            # launch -> round 0's evaluation: SuperLink, Ray, node registration, ticket
            "setup_s": times[0] - t0,
            # round 1 starts every ClientApp actor: imports, the training set, the partitioner
            "round1_s": times[1] - times[0],
            "round1_actor_cpu_s": c1["actor"] - c0["actor"],
            "round1_sim_cpu_s": c1["sim"] - c0["sim"],
            # the steady state: warm actors
            "later_s_per_round": (times[last] - times[1]) / (last - 1),
            "later_sim_cpu_s_per_round": (cl["sim"] - c1["sim"]) / (last - 1),
            "later_actor_cpu_s_per_round": (cl["actor"] - c1["actor"]) / (last - 1),
            "s_per_round": (times[last] - times[0]) / last,
            "train_phase_s": summary["round_wall_seconds"],
            "total_s": time.time() - t0,
            "nice": {g: sorted(v) for g, v in sampler.nice.items()},
            "final_accuracy": summary["final_global_accuracy"]}


def table(rows: list[dict]) -> str:
    lines = ["| clients | sampled / round | peak RSS, process tree (GB) | setup (s) | round 1 (s) | "
             "round 1: actor CPU (s) | round 1: flwr-simulation CPU (s) | rounds 2+ (s / round) | "
             "rounds 2+: flwr-simulation CPU (s / round) | load avg at start |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['clients']:,} | {r['per_round']} | {r['peak_rss_gb']:.2f} | "
                     f"{r['setup_s']:.1f} | {r['round1_s']:.1f} | {r['round1_actor_cpu_s']:.1f} | "
                     f"{r['round1_sim_cpu_s']:.1f} | {r['later_s_per_round']:.2f} | "
                     f"{r['later_sim_cpu_s_per_round']:.2f} | {r['load_avg_at_start']:.1f} |")
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
