"""Is an interrupted-and-resumed run equal to an uninterrupted one? (simulation engine)

    python simulations/resume_check.py --data-root ../shared/data                 # clients keep state on disk
    python simulations/resume_check.py --data-root ../shared/data --no-client-state

Runs the same small HideNseek config twice: once straight through, once stopped after round
``--stop-after`` (the server raises right after that round's checkpoint) and resumed with
``server.resume=true``. Prints both accuracy columns and whether they are equal.
"""

from __future__ import annotations

import argparse
import csv
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


class Stop(Exception):
    pass


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-root", default=None)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--stop-after", type=int, default=2)
    p.add_argument("--no-client-state", action="store_true",
                   help="do not set server.client_state_dir (clients lose their scores at resume)")
    a = p.parse_args()
    from fedticket.fl.run import prepare, run_fl

    work = Path(tempfile.mkdtemp(prefix="resume-check-"))
    base = ["num_clients=4", "clients_per_round=3", "data.train_subset=2000",
            "data.test_subset=1000", "model.prune_iterations=10", "eval.personal_every=1",
            "data.download=false", "sim.num_cpus=2", f"rounds={a.rounds}"]

    def cfg(name, *extra):
        state = [] if a.no_client_state else [f"server.client_state_dir={work / name}-state"]
        return prepare(REPO / "configs/fl/quickstart.yaml", base + state + list(extra),
                       data_root=a.data_root)

    def stop(server_round, _arrays):
        if server_round == a.stop_after:
            raise Stop

    run_fl(cfg("a"), work / "a", quiet=True)
    try:
        run_fl(cfg("b"), work / "b", quiet=True, on_round_end=stop)
    except Stop:
        pass
    run_fl(cfg("b", "server.resume=true"), work / "b", quiet=True)
    cols = {}
    for name in "ab":
        with open(work / name / "rounds.csv", newline="") as fh:
            cols[name] = [r["global_accuracy"] for r in csv.DictReader(fh)]
    print("round  uninterrupted  resumed")
    for i, (x, y) in enumerate(zip(cols["a"], cols["b"], strict=True)):
        print(f"{i:5d}  {x:>13}  {y:>7}")
    print("equal:", cols["a"] == cols["b"], f"(results in {work})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
