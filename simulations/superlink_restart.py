"""How a Flower 1.42 federation recovers from a SuperLink restart (real processes, 127.0.0.1).

    python simulations/superlink_restart.py --data-root ../shared/data

Starts a SuperLink (TLS, SuperNode auth, a database) and N registered SuperNodes, SIGKILLs the
SuperLink, starts it again on the same database, and times what follows: when the SuperNodes
exit, when the SuperLink lists them offline, when restarted SuperNodes are online, and whether a
one-round run then completes. Every process is stopped at the end.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--nodes", type=int, default=2)
    p.add_argument("--data-root", default=os.environ.get("FEDTICKET_DATA", str(REPO / "data")))
    a = p.parse_args()
    from fedticket.deploy.localfed import LocalFederation

    work = Path(tempfile.mkdtemp(prefix="superlink-restart-"))
    names = [f"n{i}" for i in range(a.nodes)]
    with LocalFederation(work, REPO, data_root=a.data_root) as fed:
        fed.start_superlink()
        for n in names:
            fed.register(n)
        nodes = [fed.start_supernode(n, i, a.nodes, state_dir=work / f"state-{n}")
                 for i, n in enumerate(names)]
        fed.wait_online(names)
        fed.kill(fed.superlink)
        fed.start_superlink()
        t0 = time.monotonic()
        for node in nodes:
            node.popen.wait(timeout=300)
        print(f"SuperNodes exited {time.monotonic() - t0:.0f} s after the restart, exit codes "
              f"{[n.popen.returncode for n in nodes]}")
        for n in names:
            fed.wait_offline(n)
        print(f"all listed offline {time.monotonic() - t0:.0f} s after the restart")
        nodes = [fed.restart(n) for n in nodes]
        fed.wait_online(names)
        print(f"restarted SuperNodes online {time.monotonic() - t0:.0f} s after the restart")
        rid = fed.run({"rounds": 1, "num_clients": a.nodes, "clients_per_round": a.nodes,
                       "output_dir": str(work / "run"), "data.train_subset": 1000,
                       "eval.personal_every": 0})
        print(f"a one-round run: {fed.wait_run(rid, 600)} "
              f"({time.monotonic() - t0:.0f} s after the restart); files in {work}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
