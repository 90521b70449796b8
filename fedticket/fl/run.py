"""``fedticket fl run``: validate the config, find the data, run Flower's simulation engine.

Everything that can be wrong with the input (config keys, types, values, missing data) fails here,
before Ray starts. The run itself goes through ``flwr.simulation.run_simulation`` with the Ray
backend: one ClientApp per virtual SuperNode, the ServerApp in a thread of this process.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

from fedticket.errors import UserError
from fedticket.fl.config import FLConfig, load_fl_config
from fedticket.fl.dataset import resolve_root

log = logging.getLogger("fedticket.fl")
CHECKPOINT = "checkpoint.safetensors"
# what a run writes into its results folder: --overwrite removes exactly these
FL_RESULT_FILES = (CHECKPOINT, "rounds.csv", "summary.json", "config.yaml", "server.log", "*.png")


def prepare(config_path=None, overrides=(), data_root=None, base=None) -> FLConfig:
    """Load + validate the config and resolve the data root to an absolute path (or UserError)."""
    cfg = load_fl_config(config_path, overrides, base=base)
    cfg.data.root = str(resolve_root(cfg.data.name, data_root, cfg.data.root, cfg.data.download))
    return cfg


def backend_config(cfg: FLConfig) -> dict:
    init_args: dict = {"logging_level": "ERROR", "log_to_driver": False}
    if cfg.sim.num_cpus:
        init_args["num_cpus"] = cfg.sim.num_cpus
    return {"client_resources": {"num_cpus": cfg.sim.cpus_per_client, "num_gpus": 0.0},
            "init_args": init_args}


def run_fl(cfg: FLConfig, out_dir: str | Path, quiet: bool = False, client_app=None,
           on_round_end=None) -> dict:
    """Run one federated experiment on Flower's simulation engine; returns summary.json's dict.

    ``client_app`` replaces fedticket's ClientApp (the robustness tests pass a faulty one);
    ``on_round_end(round, arrays)`` runs after each round's checkpoint (the resume tests stop
    the server there).
    """
    from flwr.serverapp import ServerApp
    from flwr.simulation import run_simulation

    from fedticket.fl.server_app import run_server

    if client_app is None:
        from fedticket.fl.client_app import app as client_app

    holder: dict = {}
    server_app = ServerApp()

    @server_app.main()
    def _main(grid, context):  # the config is already validated: no run_config needed
        try:
            holder["summary"] = run_server(grid, cfg, out_dir, quiet=quiet,
                                           on_round_end=on_round_end)
        except BaseException as e:  # surfaced below with its own message, not Flower's
            holder["error"] = e
            raise

    # Ray's accelerator FutureWarning and Flower's run_simulation deprecation notice are noise here.
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    flwr_logger = logging.getLogger("flwr")
    old_level = flwr_logger.level
    flwr_logger.setLevel(logging.ERROR)
    if not logging.getLogger("fedticket").handlers:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            run_simulation(server_app=server_app, client_app=client_app,
                           num_supernodes=cfg.num_clients, backend_name=cfg.sim.backend,
                           backend_config=backend_config(cfg))
    except Exception:
        if "error" in holder:
            raise holder["error"] from None
        raise
    finally:
        flwr_logger.setLevel(old_level)
    if "error" in holder:
        raise holder["error"]
    if "summary" not in holder:
        raise RuntimeError("the Flower simulation ended without a result (see the log above)")
    return holder["summary"]


def main(args) -> int:
    """``fedticket fl run -c CFG [--set k=v ...] [--out DIR] [--data-root D] [--quiet]``."""
    from fedticket.fl.server_app import default_output_dir

    cfg = prepare(getattr(args, "config", None), getattr(args, "set", None) or (),
                  getattr(args, "data_root", None))
    if cfg.server.resume and not (getattr(args, "out", None) or cfg.output_dir):
        raise UserError("server.resume=true needs the results folder of the run to continue: "
                        "pass --out DIR (or set output_dir)")
    out = Path(args.out) if getattr(args, "out", None) else (
        Path(cfg.output_dir) if cfg.output_dir else default_output_dir(cfg))
    quiet = bool(getattr(args, "quiet", False))
    overwrite = bool(getattr(args, "overwrite", False))
    from fedticket.fl.server_app import load_checkpoint
    from fedticket.results import RunDir, check_output_dir, clear_results

    if overwrite and cfg.server.resume:
        raise UserError("--overwrite replaces the results in --out, server.resume=true continues "
                        "them; choose one")
    checkpointed = (out / CHECKPOINT).exists()
    # all refusals before Ray starts: a path that cannot hold results, results of another run
    # (rerunning into a folder without a checkpoint would replace them), a mismatched resume
    check_output_dir(out, overwrite=overwrite, resume=cfg.server.resume and checkpointed,
                     hint=("to continue it pass --set server.resume=true; " if checkpointed
                           else ""))
    if overwrite:
        clear_results(out, FL_RESULT_FILES)
    elif checkpointed:
        load_checkpoint(cfg, RunDir(out))
    summary = run_fl(cfg, out, quiet=quiet)
    if not quiet:
        print(f"{cfg.method}: final global accuracy {summary['final_global_accuracy']:.4f} "
              f"(from {summary['initial_global_accuracy']:.4f}) after {summary['rounds']} rounds; "
              f"uplink {summary['uplink_bytes_per_client_round']:.0f} bytes per client per round; "
              f"{summary['wall_seconds']:.1f} s")
        print(f"results: {out}")
    return 0


if __name__ == "__main__":  # pragma: no cover - convenience: python -m fedticket.fl.run -c CFG
    import argparse

    p = argparse.ArgumentParser(prog="python -m fedticket.fl.run")
    p.add_argument("-c", "--config")
    p.add_argument("--set", action="append", default=[])
    p.add_argument("--out")
    p.add_argument("--data-root")
    p.add_argument("--quiet", action="store_true")
    try:
        raise SystemExit(main(p.parse_args()))
    except UserError as e:
        raise SystemExit(f"fedticket: error: {e}") from None
