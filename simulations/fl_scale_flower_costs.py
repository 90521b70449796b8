"""The two costs of Flower 1.42's simulation runtime that grow with the number of nodes, timed alone.

1. The dispatcher (``add_messages_to_queue`` in ``flwr/server/superlink/fleet/vce/vce_api.py``)
   calls ``InMemoryLinkState.get_message_ins(node_id, limit=1)`` for every registered node every
   0.1 s; each call walks every message still in the store (a message stays there until its reply
   is pulled) and checks it (``_check_stored_messages``). One sweep is timed over nodes
   registered by Flower's own ``_register_nodes``, with nothing pending and with ``--pending``
   delivered-but-unanswered messages (a round's sampled clients at work).
2. Setup: ``_register_node_info_stores`` parses the app's ``pyproject.toml`` once per node
   (``get_fused_config_from_dir``); timed on the app folder ``fedticket fl run`` generates.

    python simulations/fl_scale_flower_costs.py --nodes 100 1000 10000 --pending 10
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parents[1]


def sweep_seconds(num_nodes: int, pending: int) -> tuple[float, float]:
    """CPU seconds of one dispatcher sweep with nothing pending, and with ``pending`` in flight."""
    from flwr.server.superlink.fleet.vce.vce_api import _register_nodes
    from flwr.server.superlink.linkstate import LinkStateFactory
    from flwr.supercore.constant import FLWR_IN_MEMORY_DB_NAME, NOOP_FEDERATION_ID
    from flwr.supercore.object_store import ObjectStoreFactory
    from flwr.superlink.federation import NoOpFederationManager

    factory = LinkStateFactory(FLWR_IN_MEMORY_DB_NAME, NoOpFederationManager(),
                               ObjectStoreFactory())
    nodes = list(_register_nodes(num_nodes, factory))
    state = factory.state()

    def sweep() -> float:
        t0 = time.process_time()   # CPU seconds: the machine may be shared
        for node in nodes:
            state.get_message_ins(node_id=node, limit=1)
        return time.process_time() - t0

    empty = sweep()
    # messages already handed to a node (delivered_at set) whose reply is not back yet: only
    # the fields get_message_ins reads, so no run has to exist
    state.run_ids[1] = SimpleNamespace(run=SimpleNamespace(federation_id=NOOP_FEDERATION_ID))
    for k, node in enumerate(nodes[:pending]):
        state.message_ins_store[f"m{k}"] = SimpleNamespace(metadata=SimpleNamespace(
            dst_node_id=node, src_node_id=0, run_id=1, created_at=time.time(), ttl=3600.0,
            delivered_at="delivered"))
    return empty, sweep()


def config_parse_seconds(repeat: int = 1000) -> float:
    """CPU seconds of one ``get_fused_config_from_dir`` on fedticket's generated app folder."""
    from flwr.common.config import get_fused_config_from_dir

    from fedticket.deploy.simulation import app_pyproject
    from fedticket.fl.config import load_fl_config

    cfg = load_fl_config(str(REPO / "configs/fl/quickstart.yaml"), [])
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "pyproject.toml").write_text(app_pyproject(cfg))
        t0 = time.process_time()
        for _ in range(repeat):
            get_fused_config_from_dir(Path(d), {})
        return (time.process_time() - t0) / repeat


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nodes", type=int, nargs="+", default=[100, 1000, 10000])
    p.add_argument("--pending", type=int, default=10, help="messages in flight (sampled clients)")
    args = p.parse_args(argv)
    per_node = config_parse_seconds()
    print("| nodes | sweep, nothing pending (ms CPU) | sweep, "
          f"{args.pending} pending (ms CPU) | setup: config parses (s CPU) |")
    print("|---:|---:|---:|---:|")
    for n in args.nodes:
        empty, busy = sweep_seconds(n, args.pending)
        print(f"| {n:,} | {empty * 1e3:.1f} | {busy * 1e3:.1f} | {per_node * n:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
