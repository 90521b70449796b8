"""The ServerApp: build and prune the ticket, run the strategy, write the results folder.

:func:`run_server` is the whole server side; both entry points call it. ``fedticket fl run``
builds a ServerApp around it with the already-validated config (:mod:`fedticket.fl.run`);
``flwr run .`` loads the module-level ``app`` below, which reads ``[tool.flwr.app.config]``.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime
from pathlib import Path

import torch
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.serverapp import Grid, ServerApp

from fedticket.config import to_dict
from fedticket.core import Mask
from fedticket.errors import UserError
from fedticket.fl.config import FLConfig, config_from_run_config
from fedticket.fl.dataset import resolve_root, test_tensors
from fedticket.fl.model import build_ticket, build_weights, evaluate
from fedticket.fl.strategy import METRICS, TicketStrategy, make_strategy
from fedticket.results import RunDir, plot_lines

log = logging.getLogger("fedticket.fl")

ROUND_COLUMNS = ("round", "global_accuracy", "personalized_accuracy", "uplink_bytes",
                 "downlink_bytes", "client_train_seconds")


def default_output_dir(cfg: FLConfig) -> Path:
    return Path("runs") / "fl" / f"{datetime.now():%Y%m%d-%H%M%S}-{cfg.method}"


def discover(grid: Grid, cfg: FLConfig, wait_seconds: float = 120.0) -> dict[int, int]:
    """Partition id -> node id, asked from every connected node (a ``query`` message each).

    Node ids are random per run; sampling by partition id keeps runs with the same seed equal.
    """
    t0 = time.monotonic()
    while len(nodes := list(grid.get_node_ids())) < cfg.num_clients:
        if time.monotonic() - t0 > wait_seconds:
            raise UserError(f"only {len(nodes)} Flower SuperNodes connected, num_clients="
                            f"{cfg.num_clients} needs one each (flwr run: pass "
                            f"--federation-config 'num-supernodes={cfg.num_clients}')")
        time.sleep(0.05)
    msgs = [Message(RecordDict({"config": ConfigRecord({"round": 0})}), dst_node_id=n,
                    message_type="query") for n in nodes]
    mapping: dict[int, int] = {}
    for reply in grid.send_and_receive(msgs, timeout=cfg.sim.timeout):
        if reply.has_error():
            raise RuntimeError(f"node {reply.metadata.src_node_id} failed discovery: "
                               f"{reply.error.reason}")
        m = reply.content.metric_records[METRICS]
        if int(m["num-partitions"]) != cfg.num_clients:
            raise UserError(f"the federation has {int(m['num-partitions'])} SuperNodes but "
                            f"num_clients={cfg.num_clients}; make them equal (flwr run: "
                            f"--federation-config 'num-supernodes={cfg.num_clients}')")
        mapping[int(m["partition-id"])] = reply.metadata.src_node_id
    missing = sorted(set(range(cfg.num_clients)) - set(mapping))
    if missing:
        raise RuntimeError(f"no node answered for partitions {missing[:10]}")
    return mapping


class Recorder:
    """``evaluate_fn`` of the strategy: global accuracy each round, one CSV row, the progress bar."""

    def __init__(self, cfg: FLConfig, strategy: TicketStrategy, run_dir: RunDir, x_test, y_test,
                 quiet: bool):
        self.cfg, self.strategy, self.run_dir = cfg, strategy, run_dir
        self.x_test, self.y_test = x_test, y_test
        self.rows: list[dict] = []
        self.bar = None
        if not quiet:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=cfg.rounds, desc=f"fl {cfg.method}", unit="round", leave=True)

    def __call__(self, server_round: int, arrays) -> None:
        model = self.strategy.eval_model(arrays["payload"], server_round)
        acc, loss = evaluate(model, self.x_test, self.y_test, self.cfg.eval.batch_size)
        st = self.strategy.stats.get(server_round)
        row = {
            "round": server_round,
            "global_accuracy": round(acc, 6),
            "personalized_accuracy": (round(st.personalized_accuracy, 6)
                                      if st and st.personalized_accuracy is not None else ""),
            "uplink_bytes": st.uplink_bytes if st else 0,
            "downlink_bytes": st.downlink_bytes if st else 0,
            "client_train_seconds": round(sum(st.train_seconds), 4) if st else 0.0,
            "global_loss": round(loss, 6),
            "clients": len(st.sampled) if st else 0,
            "accepted": st.accepted if st else 0,
            "rejected": st.rejected if st else 0,
            "setup_bytes": st.setup_bytes if st else 0,
            "eval_downlink_bytes": st.eval_downlink_bytes if st else 0,
            "train_wall_seconds": round(st.train_wall_seconds, 4) if st else 0.0,
            "client_handler_seconds": round(sum(st.client_seconds), 4) if st else 0.0,
        }
        self.rows.append(row)
        self.run_dir.append_csv("rounds.csv", row)
        if self.bar is not None and server_round > 0:
            self.bar.update(1)
            self.bar.set_postfix(acc=f"{acc:.3f}", up=f"{row['uplink_bytes'] / 1e6:.3g}MB")
        return None

    def close(self):
        if self.bar is not None:
            self.bar.close()


def _mean(xs):
    xs = list(xs)
    return sum(xs) / len(xs) if xs else float("nan")


def write_outputs(cfg: FLConfig, strategy: TicketStrategy, recorder: Recorder, run_dir: RunDir,
                  wall: float, setup_seconds: float) -> dict:
    rows = recorder.rows
    trained = [r for r in rows if r["round"] > 0]
    stats = [strategy.stats[r["round"]] for r in trained if r["round"] in strategy.stats]
    up_per = [b for s in stats for b in s.uplink_per_reply]
    down_per = [b for s in stats for b in s.downlink_per_message]
    setup_total = sum(s.setup_bytes for s in stats)
    n_msgs = sum(len(s.downlink_per_message) for s in stats)
    personal = [r["personalized_accuracy"] for r in trained if r["personalized_accuracy"] != ""]
    summary = {
        "method": cfg.method,
        "aggregation": cfg.aggregation,
        "dataset": cfg.data.name,
        "model": cfg.model.name,
        "partition": cfg.data.partition,
        "density": cfg.density if cfg.method != "fedavg" else 1.0,
        "num_clients": cfg.num_clients,
        "clients_per_round": cfg.clients_per_round,
        "rounds": len(trained),
        "seed": cfg.seed,
        "kept_weights": strategy.ticket.kept,
        "prunable_weights": strategy.ticket.mask.numel,
        "uplink_values_per_client": strategy.uplink_values,
        "uplink_kind": strategy.uplink_kind,
        "initial_global_accuracy": rows[0]["global_accuracy"] if rows else None,
        "final_global_accuracy": trained[-1]["global_accuracy"] if trained else None,
        "best_global_accuracy": max((r["global_accuracy"] for r in trained), default=None),
        "final_personalized_accuracy": personal[-1] if personal else None,
        "uplink_bytes_per_client_round": _mean(up_per),
        "downlink_bytes_per_client_round": (sum(down_per) - setup_total) / n_msgs if n_msgs else None,
        "setup_downlink_bytes_per_client": (setup_total / max(1, len(strategy.has_setup))),
        "total_uplink_bytes": sum(r["uplink_bytes"] for r in trained),
        "total_downlink_bytes": sum(r["downlink_bytes"] for r in trained),
        "rejected_replies": sum(r["rejected"] for r in trained),
        "client_train_seconds_per_round": _mean(r["client_train_seconds"] for r in trained),
        "client_train_seconds_per_client_round": _mean(t for s in stats for t in s.train_seconds),
        "round_wall_seconds": _mean(r["train_wall_seconds"] for r in trained),
        "setup_seconds": setup_seconds,
        "wall_seconds": wall,
    }
    run_dir.write_json("summary.json", summary)
    xs = [r["round"] for r in rows]
    series = {"global": (xs, [r["global_accuracy"] for r in rows])}
    pr = [(r["round"], r["personalized_accuracy"]) for r in rows if r["personalized_accuracy"] != ""]
    if pr:
        series["personalized"] = ([p[0] for p in pr], [p[1] for p in pr])
    title = f"{cfg.method} · {cfg.data.name} · density {summary['density']:g}"
    plot_lines(run_dir.file("accuracy_vs_round.png"), series, "round", "accuracy", title)
    cum, mb = 0, []
    for r in rows:
        cum += r["uplink_bytes"]
        mb.append(cum / 1e6)
    plot_lines(run_dir.file("accuracy_vs_uplink.png"),
               {"global": (mb, [r["global_accuracy"] for r in rows])},
               "cumulative uplink (MB, all clients)", "accuracy", title)
    return summary


def run_server(grid: Grid, cfg: FLConfig, out_dir: str | Path, quiet: bool = False) -> dict:
    """The whole server side of one run; returns summary.json's content."""
    t0 = time.perf_counter()
    if cfg.sim.torch_threads:
        torch.set_num_threads(cfg.sim.torch_threads)
    torch.manual_seed(cfg.seed)
    run_dir = RunDir(out_dir)
    run_dir.save_config(to_dict(cfg))
    run_dir.file("rounds.csv").unlink(missing_ok=True)  # rows are appended: start a reused folder clean
    # fedavg is dense: its "ticket" keeps every weight; the others prune with SynFlow (no data)
    mask = Mask.ones_like(build_weights(cfg)) if cfg.method == "fedavg" else None
    ticket = build_ticket(cfg, mask)
    x_test, y_test = test_tensors(cfg, cfg.data.root)
    nodes = discover(grid, cfg)
    strategy = make_strategy(cfg, ticket, nodes)
    recorder = Recorder(cfg, strategy, run_dir, x_test, y_test, quiet)
    setup_seconds = time.perf_counter() - t0
    try:
        strategy.start(grid, strategy.initial_arrays(), num_rounds=cfg.rounds,
                       timeout=cfg.sim.timeout, evaluate_fn=recorder)
    finally:
        recorder.close()
    return write_outputs(cfg, strategy, recorder, run_dir, time.perf_counter() - t0, setup_seconds)


# ---- `flwr run .` ---------------------------------------------------------------------------
app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Entry point for ``flwr run .``: the run config is ``[tool.flwr.app.config]``."""
    cfg = config_from_run_config({k: v for k, v in context.run_config.items()
                                  if not (k == "output_dir" and v == "")})
    cfg.data.root = str(resolve_root(cfg.data.name, None, cfg.data.root, cfg.data.download))
    out = Path(cfg.output_dir) if cfg.output_dir else default_output_dir(cfg)
    out = out.resolve()
    logging.getLogger("fedticket.fl").warning("fedticket: writing results to %s", out)
    summary = run_server(grid, cfg, out, quiet=True)
    logging.getLogger("fedticket.fl").warning(
        "fedticket: final global accuracy %.4f, uplink %.0f bytes per client per round",
        summary["final_global_accuracy"], summary["uplink_bytes_per_client_round"])
