"""Edge footprint of a fedticket SuperNode: memory, time and bytes per client per round.

Runs a real deployment on this machine (``fedticket.deploy.localfed``: one SuperLink, N registered
SuperNodes, TLS and SuperNode authentication on, 127.0.0.1) once per method, and measures what a
device would pay:

* peak memory (VmHWM) of every ``flwr-clientapp`` process (Flower 1.42 starts one per message)
  and of the long-lived ``flower-supernode`` process with its ``flower-superexec`` child;
* time per round on the client: the train handler (``client-seconds``), local optimisation only
  (``train-seconds``), and the wall time of the ClientApp process (start, imports, FAB, handler);
* bytes per client per round: model payloads counted by fedticket from the real messages, and
  Flower's own per-run traffic counters (``flwr ls --run-id``: everything on the wire, including
  the one-time setup, discovery and protocol framing), divided by client-rounds.

    python simulations/edge_footprint.py                       # hidenseek vs fedavg, 5 rounds
    python simulations/edge_footprint.py --methods hidenseek --rounds 3 --out runs/edge

Prints a table and writes ``footprint.json`` into ``--out``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fedticket.deploy.localfed import CONNECTION, LocalFederation  # noqa: E402


def _vmhwm(pid: int) -> int | None:
    """Peak resident set size in bytes (Linux /proc), None if the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


class Monitor(threading.Thread):
    """Polls the process trees under the SuperNodes; keeps each process's peak and lifetime."""

    def __init__(self, roots: list[int], period: float = 0.02):
        super().__init__(daemon=True)
        self.roots, self.period = roots, period
        self.seen: dict[int, dict] = {}
        self.stop_event = threading.Event()

    def run(self) -> None:
        import psutil

        while not self.stop_event.is_set():
            now = time.monotonic()
            alive = set()
            for root in self.roots:
                try:
                    procs = [psutil.Process(root), *psutil.Process(root).children(recursive=True)]
                except psutil.NoSuchProcess:
                    continue
                for p in procs:
                    try:
                        cmd = " ".join(p.cmdline())
                    except psutil.Error:
                        continue
                    kind = ("clientapp" if "flwr-clientapp" in cmd else
                            "superexec" if "flower-superexec" in cmd else
                            "supernode" if "flower-supernode" in cmd else "other")
                    peak = _vmhwm(p.pid)
                    if peak is None:
                        continue
                    rec = self.seen.setdefault(p.pid, {"kind": kind, "root": root, "peak": 0,
                                                       "first": now, "last": now})
                    rec["peak"] = max(rec["peak"], peak)
                    rec["last"] = now
                    alive.add(p.pid)
            self.stop_event.wait(self.period)

    def stop(self) -> None:
        self.stop_event.set()
        self.join(timeout=5)


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def measure(fed: LocalFederation, method: str, args, roots: list[int]) -> dict:
    out = Path(args.out).resolve() / method
    run_config = {
        "method": method, "num_clients": args.nodes, "clients_per_round": args.nodes,
        "rounds": args.rounds, "density": args.density, "data.train_subset": args.train_subset,
        "data.test_subset": 1000, "eval.personal_every": 0, "output_dir": str(out),
        "server.train_timeout": 300.0,
    }
    mon = Monitor(roots)
    mon.start()
    t0 = time.monotonic()
    run_id = fed.run(run_config)
    status = fed.wait_run(run_id, args.timeout)
    wall = time.monotonic() - t0
    mon.stop()
    if status != "finished:completed":
        raise RuntimeError(f"{method}: run ended {status}:\n{fed.logs(run_id)[-3000:]}")
    summary = json.loads((out / "summary.json").read_text())
    rows = [r for r in _rows(out / "rounds.csv") if r["round"] != "0"]
    client_rounds = sum(int(r["accepted"]) for r in rows)
    ls = fed.flwr("ls", CONNECTION, "--run-id", str(run_id), "--format", "json").stdout
    traffic = json.loads(ls[ls.index("{"):])["runs"][0]["network-traffic"]
    apps = [r for r in mon.seen.values() if r["kind"] == "clientapp"]
    nodes = [r for r in mon.seen.values() if r["kind"] in ("supernode", "superexec")]
    per_round_handler = [float(r["client_handler_seconds"]) / max(1, int(r["accepted"]))
                         for r in rows]
    per_round_train = [float(r["client_train_seconds"]) / max(1, int(r["accepted"])) for r in rows]
    return {
        "method": method,
        "rounds": len(rows), "client_rounds": client_rounds, "wall_seconds": round(wall, 1),
        "final_global_accuracy": summary["final_global_accuracy"],
        "kept_weights": summary["kept_weights"],
        "clientapp_processes": len(apps),
        "clientapp_peak_rss_mb_max": round(max(r["peak"] for r in apps) / 2**20, 1),
        "clientapp_peak_rss_mb_median": round(statistics.median(r["peak"] for r in apps) / 2**20, 1),
        "clientapp_process_seconds_median": round(statistics.median(
            r["last"] - r["first"] for r in apps), 2),
        "supernode_plus_superexec_rss_mb": round(
            max(sum(r["peak"] for r in nodes if r["root"] == root) for root in roots) / 2**20, 1),
        "client_handler_seconds_per_round": round(statistics.median(per_round_handler), 3),
        "client_train_seconds_per_round": round(statistics.median(per_round_train), 3),
        "uplink_payload_bytes_per_client_round": summary["uplink_bytes_per_client_round"],
        "downlink_payload_bytes_per_client_round": summary["downlink_bytes_per_client_round"],
        "setup_bytes_per_client": summary["setup_downlink_bytes_per_client"],
        "flower_inbound_bytes_per_client_round": round(traffic["inbound-bytes"] / client_rounds),
        "flower_outbound_bytes_per_client_round": round(traffic["outbound-bytes"] / client_rounds),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--methods", default="hidenseek,fedavg")
    p.add_argument("--nodes", type=int, default=2)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--density", type=float, default=0.1)
    p.add_argument("--train-subset", type=int, default=6000,
                   help="training examples split over the nodes (default 6000: 2400 train per node)")
    p.add_argument("--data-root", default=os.environ.get("FEDTICKET_DATA", str(REPO / "data")))
    p.add_argument("--out", default=str(REPO / "runs" / "edge_footprint"))
    p.add_argument("--timeout", type=float, default=900.0)
    args = p.parse_args()
    work = Path(args.out).resolve() / "federation"
    results = []
    with LocalFederation(work, REPO, data_root=args.data_root) as fed:
        fed.start_superlink()
        names = [f"edge{i}" for i in range(args.nodes)]
        for n in names:
            fed.register(n)
        nodes = [fed.start_supernode(n, i, args.nodes, state_dir=work / f"state-{n}")
                 for i, n in enumerate(names)]
        fed.wait_online(names)
        for method in args.methods.split(","):
            res = measure(fed, method.strip(), args, [n.pid for n in nodes])
            results.append(res)
            print(json.dumps(res), flush=True)
    (Path(args.out) / "footprint.json").write_text(json.dumps(results, indent=2))
    keys = [k for k in results[0] if k != "method"]
    print("\n| quantity | " + " | ".join(r["method"] for r in results) + " |")
    print("|---|" + "---|" * len(results))
    for k in keys:
        print(f"| {k} | " + " | ".join(str(r[k]) for r in results) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
