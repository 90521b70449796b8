"""Time per round of ``fedticket fl run``'s two engines, side by side on the same load.

``inproc``: ``fedticket.fl.run.run_fl`` (``flwr.simulation.run_simulation`` in this process, the
CLI's engine before); ``superlink``: ``fedticket fl run`` as a user runs it now (a private local
SuperLink with the simulation runtime). Runs alternate (A B A B ...) so that a noisy machine
loads both alike; prints per-run and median seconds per round (summary.json's
``round_wall_seconds``), setup seconds and the whole command's wall time, and checks that the
two engines give the same per-round accuracies.

    python simulations/fl_run_paths.py --reps 2 --set rounds=5
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _accs(out: Path) -> list[str]:
    with open(out / "rounds.csv", newline="") as fh:
        return [r["global_accuracy"] for r in csv.DictReader(fh)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-c", "--config", default=str(REPO / "configs/fl/quickstart.yaml"))
    p.add_argument("--set", action="append", default=[])
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--data-root", default=None)
    a = p.parse_args()
    from fedticket.fl.run import prepare, run_fl

    work = Path(tempfile.mkdtemp(prefix="fl-run-paths-"))
    res: dict[str, list[dict]] = {"inproc": [], "superlink": []}
    accs: dict[str, list[str]] = {}
    for rep in range(a.reps):
        for engine in ("inproc", "superlink"):
            out = work / f"{engine}{rep}" / "run"  # same path length: same setup bytes
            t0 = time.perf_counter()
            if engine == "inproc":
                cfg = prepare(a.config, [*a.set, f"output_dir={out}"], data_root=a.data_root)
                run_fl(cfg, out, quiet=True)
            else:
                argv = [sys.executable, "-m", "fedticket", "fl", "run", "-c", a.config,
                        "--out", str(out), "--quiet"]
                if a.data_root:
                    argv += ["--data-root", a.data_root]
                for s in a.set:
                    argv += ["--set", s]
                subprocess.run(argv, check=True, env=dict(os.environ))
            wall = time.perf_counter() - t0
            s = json.loads((out / "summary.json").read_text())
            row = {"round_s": s["round_wall_seconds"], "setup_s": s["setup_seconds"],
                   "run_s": s["wall_seconds"], "command_s": wall}
            res[engine].append(row)
            accs.setdefault(engine, _accs(out))
            print(f"{engine:9s} rep {rep}: " + ", ".join(f"{k} {v:.2f}" for k, v in row.items()),
                  flush=True)
    for engine, rows in res.items():
        med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
        print(f"{engine:9s} median: " + ", ".join(f"{k} {v:.2f}" for k, v in med.items()))
    print("same per-round accuracies:", accs["inproc"] == accs["superlink"])


if __name__ == "__main__":
    main()
