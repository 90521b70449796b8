"""What SecAgg+ costs on the wire, beside the plain 1-bit uplink, from the real messages.

For each ``clients_per_round`` given, one plain run and one ``server.secure_aggregation=true``
run of the same config (same seed) on the in-memory Grid (the real ClientApp with
``secaggplus_mod``, every SecAgg+ message serialized as it would be on the wire). Prints, per
client and round: the plain uplink (payload Array bytes and the whole serialized reply), the
SecAgg+ uplink and downlink per stage (setup = public keys, share_keys = encrypted shares,
collect_masked_vectors = the masked vector, unmask = the shares given back), bits per kept
weight, seconds per round of both (after one discarded warm-up round), and whether the
per-round accuracies are equal.

    python simulations/fl_secagg_cost.py --clients 5 10 20 --set rounds=2
    python simulations/fl_secagg_cost.py --clients 4 --num-clients 6 --set method=fedavg \
        --set rounds=3 --set data.partition=dirichlet --set data.train_subset=1200
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

STAGES = ("setup", "share_keys", "collect_masked_vectors", "unmask")


def _accs(out: Path) -> list[str]:
    with open(out / "rounds.csv", newline="") as fh:
        return [r["global_accuracy"] for r in csv.DictReader(fh)]


def counting_grid(n: int):
    """The in-memory Grid, counting the serialized bytes of every training reply it returns."""
    from flwr.app import MessageType

    from fedticket.fl.client_app import app as client_app
    from fedticket.fl.memgrid import InMemoryGrid
    from fedticket.fl.secagg import message_nbytes

    class Counting(InMemoryGrid):
        train_reply_bytes: list[int] = []

        def deliver(self, message):
            reply = super().deliver(message)
            if (reply is not None and reply.has_content()
                    and message.metadata.message_type == MessageType.TRAIN):
                self.train_reply_bytes.append(message_nbytes(reply.content))
            return reply

    grid = Counting.for_partitions(client_app, n)
    grid.train_reply_bytes = []
    return grid


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-c", "--config", default=str(REPO / "configs/fl/quickstart.yaml"))
    p.add_argument("--clients", type=int, nargs="+", default=[5, 10, 20],
                   help="clients_per_round values (num_clients = the largest)")
    p.add_argument("--num-clients", type=int, default=None, help="default: the largest --clients")
    p.add_argument("--set", action="append", default=[])
    p.add_argument("--data-root", default=None)
    args = p.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    from fedticket.fl.run import prepare
    from fedticket.fl.server_app import run_server

    n = args.num_clients or max(args.clients)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        # one discarded round first: the first run of a process loads the data and builds
        # the ticket, which would land in whichever run came first
        warm = prepare(args.config, [f"num_clients={n}", f"clients_per_round={args.clients[0]}",
                                     "rounds=1", "eval.personal_every=0", "server.checkpoint=false",
                                     f"output_dir={Path(tmp) / 'warmup'}", *args.set],
                       data_root=args.data_root)
        run_server(counting_grid(n), warm, Path(tmp) / "warmup", quiet=True)
        for k in args.clients:
            res = {}
            for secure in ("false", "true"):
                out = Path(tmp) / f"k{k}-{secure}"
                cfg = prepare(args.config, [f"num_clients={n}", f"clients_per_round={k}",
                                            "eval.personal_every=0", "server.checkpoint=false",
                                            f"server.secure_aggregation={secure}",
                                            f"output_dir={out}", *args.set],
                              data_root=args.data_root)
                t0 = time.perf_counter()
                grid = counting_grid(n)
                summary = run_server(grid, cfg, out, quiet=True)
                res[secure] = (summary, _accs(out), time.perf_counter() - t0, grid)
            plain, secure = res["false"][0], res["true"][0]
            kept = plain["kept_weights"]
            by = secure["secagg_bytes_per_client_round"]
            rows.append({
                "clients_per_round": k, "kept_weights": kept,
                "plain_payload_B": plain["uplink_bytes_per_client_round"],
                # the whole serialized reply (payload + metrics + record names)
                "plain_reply_B": sum(res["false"][3].train_reply_bytes) / max(
                    1, len(res["false"][3].train_reply_bytes)),
                **{f"up_{s}_B": by["up"].get(s, 0.0) for s in STAGES},
                **{f"down_{s}_B": by["down"].get(s, 0.0) for s in STAGES},
                "secagg_up_B": secure["uplink_bytes_per_client_round"],
                "secagg_up_bits_per_kept": secure["uplink_bits_per_kept_weight"],
                "plain_round_s": plain["round_wall_seconds"],
                "secagg_round_s": secure["round_wall_seconds"],
                "same_accuracies": res["false"][1] == res["true"][1],
                "plain_accuracies": " ".join(res["false"][1]),
                "secagg_accuracies": " ".join(res["true"][1]),
            })
            print(json.dumps(rows[-1]), flush=True)
    print()
    print("| per client and round | " + " | ".join(f"k={r['clients_per_round']}" for r in rows) + " |")
    print("|---|" + "---|" * len(rows))
    for key in rows[0]:
        if key == "clients_per_round":
            continue
        vals = [r[key] for r in rows]
        cell = [f"{v:.1f}" if isinstance(v, float) and not float(v).is_integer() else str(
            int(v) if isinstance(v, float) else v) for v in vals]
        print(f"| {key} | " + " | ".join(cell) + " |")


if __name__ == "__main__":
    main()
