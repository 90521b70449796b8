"""``fedticket fl run``: validate the config, find the data, check the results folder, run.

Everything that can be wrong with the input (config keys, types, values, missing data, the
results folder) fails in :func:`preflight`, before any Flower process starts. The CLI then runs
the experiment on a private local SuperLink with Flower's simulation runtime
(:mod:`fedticket.deploy.simulation`, the path ``flwr run`` takes). :func:`run_fl` is the
in-process engine kept for tests and benchmarks that pass their own ClientApp or a round hook
(which cannot cross a process boundary); it is the one place that calls
``flwr.simulation.run_simulation``.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

from fedticket.errors import ConfigError, UserError
from fedticket.fl.config import FLConfig, load_fl_config
from fedticket.fl.task import get_task

log = logging.getLogger("fedticket.fl")
CHECKPOINT = "checkpoint.safetensors"
# what a run writes into its results folder: --overwrite removes exactly these
FL_RESULT_FILES = (CHECKPOINT, "rounds.csv", "summary.json", "config.yaml", "server.log",
                   "flower.log", "*.png")


def prepare(config_path=None, overrides=(), data_root=None, base=None) -> FLConfig:
    """Load + validate the config and resolve the data root to an absolute path (or UserError)."""
    cfg = load_fl_config(config_path, overrides, base=base)
    cfg.data.root = get_task(cfg).resolve_root(cfg, data_root)
    return cfg


def ray_address(cfg: FLConfig) -> str | None:
    """The Ray cluster the simulation attaches to (``sim.ray_address``, else ``RAY_ADDRESS``),
    or None for a private Ray instance; refuses what Ray refuses when attaching."""
    address = cfg.sim.ray_address or os.environ.get("RAY_ADDRESS") or None
    if address and cfg.sim.num_cpus:
        raise ConfigError(f"sim.num_cpus={cfg.sim.num_cpus} cannot be set when attaching to the "
                          f"Ray cluster at {address}: its nodes declare their CPUs (ray start "
                          "--num-cpus N); leave sim.num_cpus null")
    if address and not float(cfg.sim.cpus_per_client).is_integer():
        raise ConfigError(f"sim.cpus_per_client={cfg.sim.cpus_per_client:g} must be a whole number "
                          f"on the Ray cluster at {address} (Flower's federation config takes "
                          "whole CPUs per client); give the cluster's nodes more logical CPUs "
                          "(ray start --num-cpus) instead")
    return address


def backend_config(cfg: FLConfig) -> dict:
    init_args: dict = {"logging_level": "ERROR", "log_to_driver": False}
    address = ray_address(cfg)
    if address:
        init_args["address"] = address
    elif cfg.sim.num_cpus:
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
    # the ClientApp actors at the priority of the dispatcher that feeds them, not Ray's nice 15
    # (see fedticket.deploy.simulation.LocalSimulation; a cluster's workers keep their own)
    os.environ.setdefault("RAY_worker_niceness", "0")
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


def preflight(args) -> tuple[FLConfig, Path]:
    """Config, data root and results folder of ``fedticket fl run``, all checked (or UserError)."""
    from fedticket.fl.server_app import default_output_dir, load_checkpoint
    from fedticket.results import RunDir, check_output_dir, clear_results

    cfg = prepare(getattr(args, "config", None), getattr(args, "set", None) or (),
                  getattr(args, "data_root", None))
    ray_address(cfg)   # refused now, not after the SuperLink started
    if cfg.server.resume and not (getattr(args, "out", None) or cfg.output_dir):
        raise UserError("server.resume=true needs the results folder of the run to continue: "
                        "pass --out DIR (or set output_dir)")
    out = Path(args.out) if getattr(args, "out", None) else (
        Path(cfg.output_dir) if cfg.output_dir else default_output_dir(cfg))
    overwrite = bool(getattr(args, "overwrite", False)) or cfg.server.overwrite
    if overwrite and cfg.server.resume:
        raise UserError("--overwrite replaces the results in --out, server.resume=true continues "
                        "them; choose one")
    checkpointed = (out / CHECKPOINT).exists()
    if checkpointed and not overwrite:
        # without server.resume=true: refused, naming it; with it: the config must match
        load_checkpoint(cfg, RunDir(out))
    # a path that cannot hold results, or results without a checkpoint (server.checkpoint=
    # false): a rerun would replace them
    check_output_dir(out, overwrite=overwrite, resume=cfg.server.resume and checkpointed)
    if overwrite:
        clear_results(out, FL_RESULT_FILES)
    return cfg, out.resolve()


def report(cfg: FLConfig, summary: dict, out: Path) -> None:
    print(f"{cfg.method}: final global accuracy {summary['final_global_accuracy']:.4f} "
          f"(from {summary['initial_global_accuracy']:.4f}) after {summary['rounds']} rounds; "
          f"uplink {summary['uplink_bytes_per_client_round']:.0f} bytes per client per round; "
          f"{summary['wall_seconds']:.1f} s")
    print(f"results: {out}")


if __name__ == "__main__":  # pragma: no cover - convenience: python -m fedticket.fl.run -c CFG
    import sys

    from fedticket.cli import main

    sys.exit(main(["fl", "run", *sys.argv[1:]]))
