"""Where a ClientApp's memory goes, in one process: torch import, fedticket import, one train.

    python simulations/client_memory.py --method hidenseek --data-root ../shared/data

Prints resident and peak memory (Linux ``/proc/self/status``) after each step. The server-side
setup (SynFlow, building the first message) happens in this process too, but is not something
a device does; the train handler runs with a ``state-dir`` partition cache (run twice to see the
cached case).
"""

from __future__ import annotations

import argparse
import time


def mem(tag: str) -> None:
    d = {line.split(":")[0]: int(line.split()[1]) // 1024
         for line in open("/proc/self/status") if line.startswith(("VmHWM", "VmRSS"))}
    print(f"{tag:45s} RSS {d['VmRSS']:5d} MB   peak {d['VmHWM']:5d} MB", flush=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--method", default="hidenseek")
    p.add_argument("--data-root", default=None)
    p.add_argument("--state-dir", default="/tmp/fedticket-client-memory")
    a = p.parse_args()
    mem("start")
    import torch  # noqa: F401
    mem("import torch")
    import fedticket.fl.client_app as ca
    mem("import fedticket.fl.client_app")
    from flwr.app import ConfigRecord, Context, RecordDict
    from flwr.supercore.task_identity import TaskIdentity

    from fedticket.fl.model import build_ticket
    from fedticket.fl.run import prepare
    from fedticket.fl.strategy import make_strategy

    TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, 1
    cfg = prepare(None, [f"method={a.method}", "num_clients=2", "clients_per_round=2",
                         "data.train_subset=6000", "data.download=false"], data_root=a.data_root)
    s = make_strategy(cfg, build_ticket(cfg, None), {0: 10, 1: 11}, run_key="probe")
    msg = list(s.configure_train(1, s.initial_arrays(), ConfigRecord(), None))[0]
    mem("(server-side setup, not on a device)")
    ctx = Context(run_id=1, node_id=10, node_config={"partition-id": 0, "num-partitions": 2,
                                                      "state-dir": a.state_dir},
                  state=RecordDict(), run_config={})
    t = time.perf_counter()
    ca.train(msg, ctx)
    mem(f"after the train handler ({time.perf_counter() - t:.2f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
