"""The ServerApp: build and prune the ticket, run the strategy, write the results folder.

:func:`run_server` is the whole server side; both entry points call it. ``fedticket fl run``
builds a ServerApp around it with the already-validated config (:mod:`fedticket.fl.run`);
``flwr run .`` loads the module-level ``app`` below, which reads ``[tool.flwr.app.config]``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from datetime import datetime
from pathlib import Path

import torch
from flwr.app import Array, ArrayRecord, Context
from flwr.serverapp import Grid, ServerApp

from fedticket.config import to_dict
from fedticket.core.mask import Mask
from fedticket.errors import UserError
from fedticket.fl import checkpoint
from fedticket.fl.config import FLConfig, config_from_run_config
from fedticket.fl.history import History, RoundStats
from fedticket.fl.methods import Method, make_method, method_class
from fedticket.fl.model import build_ticket, build_weights, evaluate
from fedticket.fl.strategy import TicketStrategy
from fedticket.fl.task import get_task
from fedticket.results import RunDir, plot_lines

log = logging.getLogger("fedticket.fl")
# one INFO line per round into server.log only (not the console: the progress bar is there)
rounds_log = logging.getLogger("fedticket.fl.rounds")
rounds_log.propagate = False
rounds_log.setLevel(logging.INFO)

ROUND_COLUMNS = ("round", "global_accuracy", "personalized_accuracy", "uplink_bytes",
                 "downlink_bytes", "client_train_seconds")
RESULT_FILES = ("rounds.csv", "summary.json")


def default_output_dir(cfg: FLConfig) -> Path:
    return Path("runs") / "fl" / f"{datetime.now():%Y%m%d-%H%M%S}-{cfg.method}"


class Recorder:
    """``evaluate_fn`` of the strategy: global accuracy each round, one CSV row, the progress bar.

    It reads the round's stats from the run's :class:`History` (the one ``start`` fills)."""

    def __init__(self, cfg: FLConfig, method: Method, history: History, run_dir: RunDir,
                 x_test, y_test, quiet: bool, rows: list[dict] | None = None):
        self.cfg, self.method, self.history, self.run_dir = cfg, method, history, run_dir
        self.x_test, self.y_test = x_test, y_test
        self.rows: list[dict] = list(rows or [])   # a resumed run starts with the checkpoint's
        if self.rows:
            self.run_dir.write_csv("rounds.csv", self.rows)
        self.bar = None
        if not quiet:
            from tqdm.auto import tqdm

            done = sum(1 for r in self.rows if r["round"] > 0)
            self.bar = tqdm(total=cfg.rounds, initial=done, desc=f"fl {cfg.method}",
                            unit="round", leave=True)

    def __call__(self, server_round: int, arrays) -> None:
        model = self.method.eval_model(arrays["payload"], server_round)
        acc, loss = evaluate(model, self.x_test, self.y_test, self.cfg.eval.batch_size)
        st = self.history.rounds.get(server_round)
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
            "missing": len(st.missing) if st else 0,
            "setup_bytes": st.setup_bytes if st else 0,
            "eval_downlink_bytes": st.eval_downlink_bytes if st else 0,
            "train_wall_seconds": round(st.train_wall_seconds, 4) if st else 0.0,
            "client_handler_seconds": round(sum(st.client_seconds), 4) if st else 0.0,
        }
        self.rows.append(row)
        self.run_dir.append_csv("rounds.csv", row)
        rounds_log.info("round %d: global accuracy %.4f, accepted %d, rejected %d, missing %d, "
                        "uplink %d B", server_round, acc, row["accepted"], row["rejected"],
                        row["missing"], row["uplink_bytes"])
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


def bits_per_kept(bytes_per_client_round: float | None, kept: int) -> float | None:
    """Payload bits per kept weight of one client and round (None when nothing was sent)."""
    if bytes_per_client_round is None or kept <= 0:
        return None
    return 8.0 * bytes_per_client_round / kept


def secagg_per_client(stats: list[RoundStats]) -> dict:
    """Mean serialized bytes per client and round of each SecAgg+ stage, by direction."""
    out: dict = {}
    for way in ("up", "down"):
        tot: dict[str, list[int]] = {}
        for s in stats:
            for stage, (nbytes, nodes) in s.secagg_bytes.get(way, {}).items():
                t = tot.setdefault(stage, [0, 0])
                t[0], t[1] = t[0] + nbytes, t[1] + nodes
        out[way] = {stage: b / n for stage, (b, n) in tot.items() if n}
    return out


def write_outputs(cfg: FLConfig, method: Method, history: History, rows: list[dict],
                  run_dir: RunDir, wall: float, setup_seconds: float,
                  resumed_at: int | None = None) -> dict:
    trained = [r for r in rows if r["round"] > 0]
    stats = [history.rounds[r["round"]] for r in trained if r["round"] in history.rounds]
    up_per = [b for s in stats for b in s.uplink_per_reply]
    down_per = [b for s in stats for b in s.downlink_per_message]
    setup_total = sum(s.setup_bytes for s in stats)
    n_msgs = sum(len(s.downlink_per_message) for s in stats)
    personal = [r["personalized_accuracy"] for r in trained if r["personalized_accuracy"] != ""]
    down_mean = (sum(down_per) - setup_total) / n_msgs if n_msgs else None
    kept = method.ticket.kept
    summary = {
        "method": cfg.method,
        "aggregation": cfg.aggregation,
        "dataset": get_task(cfg).dataset_label(cfg),
        "model": cfg.model.name,
        "partition": cfg.data.partition,
        "density": 1.0 if method.dense else cfg.density,
        "num_clients": cfg.num_clients,
        "clients_per_round": cfg.clients_per_round,
        "rounds": len(trained),
        "seed": cfg.seed,
        "kept_weights": method.ticket.kept,
        "prunable_weights": method.ticket.mask.numel,
        "uplink_values_per_client": method.uplink_values,
        "uplink_kind": method.uplink_kind,
        "initial_global_accuracy": rows[0]["global_accuracy"] if rows else None,
        "final_global_accuracy": trained[-1]["global_accuracy"] if trained else None,
        "best_global_accuracy": max((r["global_accuracy"] for r in trained), default=None),
        "final_personalized_accuracy": personal[-1] if personal else None,
        "uplink_bytes_per_client_round": _mean(up_per),
        "downlink_bytes_per_client_round": down_mean,
        # 8 × the payload bytes actually moved (headers and any coding included) / kept weights
        "uplink_bits_per_kept_weight": bits_per_kept(_mean(up_per) if up_per else None, kept),
        "downlink_bits_per_kept_weight": bits_per_kept(down_mean, kept),
        # every setup is the same record: its size, however many were sent (resumes included)
        "setup_downlink_bytes_per_client": history.setup_bytes_per_client,
        "total_uplink_bytes": sum(r["uplink_bytes"] for r in trained),
        "total_downlink_bytes": sum(r["downlink_bytes"] for r in trained),
        "rejected_replies": sum(r["rejected"] for r in trained),
        "missing_replies": sum(r.get("missing", 0) for r in trained),
        "resumed_at_round": resumed_at,
        "client_train_seconds_per_round": _mean(r["client_train_seconds"] for r in trained),
        "client_train_seconds_per_client_round": _mean(t for s in stats for t in s.train_seconds),
        "round_wall_seconds": _mean(r["train_wall_seconds"] for r in trained),
        "setup_seconds": setup_seconds,
        "wall_seconds": wall,
    }
    if cfg.server.secure_aggregation:
        summary["secagg_bytes_per_client_round"] = secagg_per_client(stats)
    run_dir.write_json("summary.json", summary)
    xs = [r["round"] for r in rows]
    series = {"global": (xs, [r["global_accuracy"] for r in rows])}
    pr = [(r["round"], r["personalized_accuracy"]) for r in rows if r["personalized_accuracy"] != ""]
    if pr:
        series["personalized"] = ([p[0] for p in pr], [p[1] for p in pr])
    title = f"{cfg.method} · {get_task(cfg).dataset_label(cfg)} · density {summary['density']:g}"
    plot_lines(run_dir.file("accuracy_vs_round.png"), series, "round", "accuracy", title)
    cum, mb = 0, []
    for r in rows:
        cum += r["uplink_bytes"]
        mb.append(cum / 1e6)
    plot_lines(run_dir.file("accuracy_vs_uplink.png"),
               {"global": (mb, [r["global_accuracy"] for r in rows])},
               "cumulative uplink (MB, all clients)", "accuracy", title)
    return summary


def load_checkpoint(cfg: FLConfig, run_dir: RunDir) -> checkpoint.Checkpoint | None:
    path = run_dir.file(checkpoint.FILENAME)
    if not path.exists():
        if cfg.server.resume:
            log.warning("server.resume=true but %s has no checkpoint: starting at round 1", path)
        return None
    if not cfg.server.resume:
        raise UserError(f"{run_dir.path} holds the checkpoint of an earlier run; continue it with "
                        "server.resume=true (--set server.resume=true), or choose another "
                        "results folder (--out)")
    ckpt = checkpoint.load(path)
    checkpoint.check_compatible(ckpt, cfg, path)
    return ckpt


def run_server(grid: Grid, cfg: FLConfig, out_dir: str | Path, quiet: bool = False,
               on_round_end=None) -> dict:
    """The whole server side of one run; returns summary.json's content.

    With ``server.resume=true`` and a checkpoint in ``out_dir`` the run continues after the
    checkpointed round: same mask, same global payload, same metric rows so far.
    ``on_round_end(round, arrays)`` is called after each round's checkpoint is on disk.
    """
    t0 = time.perf_counter()
    if cfg.sim.torch_threads:
        torch.set_num_threads(cfg.sim.torch_threads)
    torch.manual_seed(cfg.seed)
    run_dir = RunDir(out_dir)
    # the fault and resume log travels with the results (a deployed ServerApp's stderr is
    # only reachable through `flwr log`)
    handler = logging.FileHandler(run_dir.file("server.log"))
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    rounds_log.addHandler(handler)
    try:
        return _run_server(grid, cfg, run_dir, quiet, on_round_end, t0)
    finally:
        log.removeHandler(handler)
        rounds_log.removeHandler(handler)
        handler.close()


def _nothing_to_do(cfg: FLConfig, run_dir: RunDir, ckpt) -> dict | None:
    """A resume that asks for no new round changes nothing and returns the saved summary."""
    if ckpt is None or ckpt.round < cfg.rounds:
        return None
    log.warning("fedticket: nothing to do: %d rounds already completed in %s (rounds=%d); "
                "raise rounds to continue the run", ckpt.round, run_dir.path, cfg.rounds)
    summary = run_dir.file("summary.json")
    return json.loads(summary.read_text()) if summary.is_file() else {"rounds": ckpt.round}


def check_results_folder(cfg: FLConfig, run_dir: RunDir, ckpt) -> None:
    """A fresh run must not replace the results of another one (unless told to)."""
    if ckpt is not None or getattr(cfg.server, "overwrite", False):
        return
    held = [name for name in RESULT_FILES if run_dir.file(name).exists()]
    if held:
        raise UserError(f"{run_dir.path} already holds results ({', '.join(held)}); choose "
                        "another folder (--out DIR, or output_dir under flwr run), or replace "
                        "them (fedticket fl run --overwrite; flwr run: server.overwrite=true)")


def _run_server(grid, cfg, run_dir, quiet, on_round_end, t0) -> dict:
    ckpt = load_checkpoint(cfg, run_dir)
    done = _nothing_to_do(cfg, run_dir, ckpt)
    if done is not None:
        return done
    check_results_folder(cfg, run_dir, ckpt)
    if ckpt is not None:
        mask = ckpt.mask  # never re-prune on resume: the ticket must be the checkpointed one
    else:
        # a dense method's "ticket" keeps every weight; the others prune with SynFlow (no data)
        mask = Mask.ones_like(build_weights(cfg)) if method_class(cfg.method).dense else None
    ticket = build_ticket(cfg, mask)
    x_test, y_test = get_task(cfg).test_data(cfg, cfg.data.root)
    key = checkpoint.fingerprint(cfg)
    # clients key their on-disk state by config *and* results folder: two runs of one config
    # in different folders (one with a fault, one without) must not share local state
    run_key = hashlib.sha256(f"{key}:{run_dir.path.resolve()}".encode()).hexdigest()[:16]
    method = make_method(cfg, ticket)
    history = History()
    prior_seconds, first_round = 0.0, 1
    initial = ArrayRecord({"payload": method.initial_global()})
    if ckpt is not None:
        history.rounds = {r: RoundStats(**d) for r, d in ckpt.stats.items()}
        payload = Array(dtype="uint8", shape=(len(ckpt.global_bytes),), stype=ckpt.global_stype,
                        data=ckpt.global_bytes)
        initial = ArrayRecord({"payload": payload})
        first_round, prior_seconds = ckpt.round + 1, ckpt.seconds
        # before the folder is touched: a refused state leaves it as it was
        checkpoint.restore_method_state(method, ckpt, run_dir.file(checkpoint.FILENAME))
        log.warning("fedticket: resuming from %s at round %d of %d", run_dir.path, first_round,
                    cfg.rounds)
    run_dir.save_config(to_dict(cfg))
    run_dir.file("rounds.csv").unlink(missing_ok=True)  # rows are appended: start a reused folder clean
    recorder = Recorder(cfg, method, history, run_dir, x_test, y_test, quiet,
                        rows=ckpt.rows if ckpt is not None else None)
    strategy = TicketStrategy(cfg, method, run_key=run_key, history=history)
    setup_seconds = time.perf_counter() - t0

    def round_end(server_round: int, arrays: ArrayRecord) -> None:
        if cfg.server.checkpoint:
            payload = arrays["payload"]
            checkpoint.save(run_dir.file(checkpoint.FILENAME), checkpoint.Checkpoint(
                round=server_round, config=to_dict(cfg), mask=ticket.mask,
                global_stype=payload.stype, global_bytes=bytes(payload.data),
                rows=recorder.rows,
                stats={r: checkpoint.stats_to_dict(s) for r, s in history.rounds.items()
                       if r <= server_round},
                seconds=prior_seconds + time.perf_counter() - t0, fingerprint=key,
                method_state=method.state()))
        if on_round_end is not None:
            on_round_end(server_round, arrays)

    try:
        history = strategy.start(grid, initial, num_rounds=cfg.rounds, evaluate_fn=recorder,
                                 first_round=first_round, on_round_end=round_end)
    finally:
        recorder.close()
    return write_outputs(cfg, method, history, recorder.rows, run_dir,
                         prior_seconds + time.perf_counter() - t0, setup_seconds,
                         resumed_at=first_round if ckpt is not None else None)


# ---- `flwr run .` ---------------------------------------------------------------------------
app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Entry point for ``flwr run .``: the run config is ``[tool.flwr.app.config]``."""
    cfg = config_from_run_config({k: v for k, v in context.run_config.items()
                                  if not (k == "output_dir" and v == "")})
    cfg.data.root = get_task(cfg).resolve_root(cfg, None)
    if cfg.server.resume and not cfg.output_dir:
        raise UserError("server.resume=true needs output_dir: the results folder of the run to "
                        "continue (--run-config 'output_dir=\"/path/to/run\" server.resume=true')")
    out = Path(cfg.output_dir) if cfg.output_dir else default_output_dir(cfg)
    out = out.resolve()
    logging.getLogger("fedticket.fl").warning("fedticket: writing results to %s", out)
    summary = run_server(grid, cfg, out, quiet=True)
    logging.getLogger("fedticket.fl").warning(
        "fedticket: final global accuracy %.4f, uplink %.0f bytes per client per round",
        summary["final_global_accuracy"], summary["uplink_bytes_per_client_round"])


def run_in_process(cfg: FLConfig, out_dir: str | Path, quiet: bool = True,
                   on_round_end=None) -> dict:
    """The same run with no engine: the real ClientApp answers in this process (an in-memory
    Grid, one node per partition). For tests and the engine-overhead benchmark."""
    from fedticket.fl.client_app import app as client_app
    from fedticket.fl.memgrid import InMemoryGrid

    grid = InMemoryGrid.for_partitions(client_app, cfg.num_clients)
    return run_server(grid, cfg, out_dir, quiet=quiet, on_round_end=on_round_end)
