"""``fedticket fl run`` the way Flower 1.42 supports it: a local SuperLink with the simulation runtime.

This is what ``flwr run`` does for a local-simulation connection
(``flwr.cli.local_superlink._start_local_superlink``): ``flower-superlink --insecure --simulation``,
then ``flwr run APP CONNECTION --federation-config num-supernodes=N``; the SuperLink starts
``flwr-simulation``, which runs the same ``fedticket.fl.server_app:app`` and
``fedticket.fl.client_app:app`` on the Ray backend. Unlike ``flwr run`` we own the SuperLink:
a private ``$FLWR_HOME`` in a temporary folder, a free port, its own session, stopped by PID
(every process of that session) when the run ends, fails or is interrupted.

The app handed to ``flwr run`` is a folder holding only a generated ``pyproject.toml`` whose
``[tool.flwr.app.config]`` is the already validated config, so nothing is validated twice
differently and no source checkout is needed: the components import the installed fedticket.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from fedticket.config import flatten, to_dict
from fedticket.deploy.commands import NO_RUNTIME_INSTALL_ENV, flwr_json, toml_value
from fedticket.deploy.poll import poll_until
from fedticket.deploy.procs import free_port, kill_procs, kill_session_tree, tree
from fedticket.errors import RunError, RunInterrupted, UserError

CONNECTION = "fedticket-sim"
SERVERAPP = "fedticket.fl.server_app:app"
CLIENTAPP = "fedticket.fl.client_app:app"
# the last "pkg.Error: message" line of a traceback in the run's log
_EXC_LINE = re.compile(r"^((?:[A-Za-z_]\w*\.)*[A-Za-z_]\w*(?:Error|Exception|Exit)): (.+)$")
_USER_ERRORS = ("fedticket.errors.UserError", "fedticket.errors.ConfigError")


def app_pyproject(cfg) -> str:
    """A Flower app's ``pyproject.toml`` whose run config is ``cfg`` (null written as "")."""
    lines = ['[project]', 'name = "fedticket-run"', 'version = "1.0.0"',
             'description = "One fedticket fl run (generated; the apps are the installed ones)"',
             'license = "Apache-2.0"', '',
             '[tool.flwr.app]', 'publisher = "fedticket"', '',
             '[tool.flwr.app.components]', f'serverapp = "{SERVERAPP}"',
             f'clientapp = "{CLIENTAPP}"', '', '[tool.flwr.app.config]']
    for key, value in flatten(to_dict(cfg)).items():
        lines.append(f"{key} = {toml_value('' if value is None else value)}")
    return "\n".join(lines) + "\n"


def federation_config(cfg) -> str:
    """``--federation-config``: one SuperNode per client and the Ray resources of ``sim.*``."""
    from fedticket.fl.run import ray_address

    cpc, total = float(cfg.sim.cpus_per_client), cfg.sim.num_cpus
    address = ray_address(cfg)   # attaching: the cluster's nodes declare their CPUs
    if not cpc.is_integer() and not address:
        # Flower's federation config takes whole CPUs per client; Ray's CPUs are a logical
        # count, so the same number of actors (total / cpus_per_client) is 1 CPU each out of
        # that many
        total, cpc = max(1, int((total or os.cpu_count() or 1) / cpc)), 1.0
    items: dict[str, Any] = {"num-supernodes": cfg.num_clients, "backend": cfg.sim.backend,
                             "client-resources-num-cpus": int(cpc),
                             "client-resources-num-gpus": 0.0,
                             "init-args-logging-level": "ERROR", "init-args-log-to-driver": False}
    if total and not address:
        items["init-args-num-cpus"] = int(total)
    return " ".join(f"{k}={toml_value(v)}" for k, v in items.items())


def error_line(log_text: str) -> tuple[str, str] | None:
    """(exception type, message) of the last exception line in a Flower run log."""
    found = None
    for line in log_text.splitlines():
        m = _EXC_LINE.match(line.strip())
        if m:
            found = (m.group(1), m.group(2).strip())
    return found


def _completed_rounds(rounds_csv: Path) -> int:
    try:
        with open(rounds_csv, newline="") as fh:
            return sum(1 for r in csv.DictReader(fh) if r.get("round") not in (None, "", "0"))
    except OSError:
        return 0


class _Terminated(Exception):
    pass


def _raise_terminated(signum, _frame):
    raise _Terminated(signal.Signals(signum).name)


class LocalSimulation:
    """A SuperLink with the simulation runtime on 127.0.0.1, private to one run."""

    def __init__(self):
        if shutil.which("flower-superlink") is None or shutil.which("flwr") is None:
            raise UserError("flower-superlink / flwr are not on PATH; activate the environment "
                            "where fedticket and flwr>=1.42 are installed")
        self.dir = Path(tempfile.mkdtemp(prefix="fedticket-sim-"))
        self.home = self.dir / "flwr-home"
        self.home.mkdir()
        self.port = free_port()
        (self.home / "config.toml").write_text(
            f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
            f'address = "127.0.0.1:{self.port}"\ninsecure = true\n')
        self.env = dict(os.environ)
        self.env.update({"FLWR_HOME": str(self.home), NO_RUNTIME_INSTALL_ENV: "1",
                         "FLWR_DISABLE_UPDATE_CHECK": "1", "PYTHONUNBUFFERED": "1",
                         # Ray's accelerator FutureWarning is noise for a CPU run
                         "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0"})
        # Ray starts its workers (the ClientApp actors) at nice 15 (its `worker_niceness`
        # system config) and the simulation runtime that feeds them at nice 0: whenever
        # anything else wants the cores (Flower's dispatcher, which sweeps every node's queue,
        # other jobs) the actors that train wait. They are the run's real work: same priority
        # as the rest. An explicit RAY_worker_niceness in the caller's environment wins.
        self.env.setdefault("RAY_worker_niceness", "0")
        self.log = self.dir / "superlink.log"
        self.proc: subprocess.Popen | None = None
        self.log_proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60.0, ray_address: str | None = None) -> None:
        if ray_address:
            # Flower's federation config has no Ray address: flwr-simulation, started by this
            # SuperLink, inherits it and its ray.init() attaches to that cluster
            self.env["RAY_ADDRESS"] = ray_address
        cmd = ["flower-superlink", "--insecure", "--simulation", "--host", "127.0.0.1",
               "--port", str(self.port), "--disable-runtime-dependency-installation"]
        with open(self.log, "ab") as fh:
            # its own session: Ctrl-C reaches this process only, which then stops the session
            self.proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=self.env,
                                         cwd=self.dir, start_new_session=True)

        def started() -> bool:
            if self.proc.poll() is not None:
                raise RunError(f"flower-superlink exited with {self.proc.returncode} at start: "
                               f"{self._tail()}")
            return "Uvicorn running on" in self.log.read_text(errors="replace")

        poll_until(started, timeout, interval=0.2, what="the local SuperLink's start")

    def _tail(self, n: int = 400) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return " ".join(text[-n:].split())

    def flwr(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess:
        return subprocess.run(["flwr", *args], capture_output=True, text=True, env=self.env,
                              cwd=self.dir, timeout=timeout)

    def submit(self, cfg) -> str:
        app = self.dir / "app"
        app.mkdir()
        (app / "pyproject.toml").write_text(app_pyproject(cfg))
        res = self.flwr("run", str(app), CONNECTION, "--federation-config",
                        federation_config(cfg), "--format", "json")
        try:
            out = flwr_json(res.stdout)
        except ValueError:
            out = {}
        if not out.get("success") or not out.get("run-id"):
            raise RunError("flwr run did not start the run: "
                           + " ".join((res.stdout + res.stderr).split())[-600:])
        return str(out["run-id"])

    def status(self, run_id: str) -> str:
        res = self.flwr("ls", CONNECTION, "--run-id", run_id, "--format", "json")
        try:
            return str(flwr_json(res.stdout)["runs"][0]["status"])
        except (ValueError, KeyError, IndexError):
            return "unknown"

    def stream_log(self, run_id: str) -> Path:
        """``flwr log RUN`` into a file: one process that exits when the run has finished, so
        waiting for the end costs no repeated ``flwr`` start-ups (seconds of CPU each)."""
        path = self.dir / f"run-{run_id}.log"
        with open(path, "wb") as fh:
            # its own session: a terminal's Ctrl-C must reach only this command, which then
            # stops everything; a log stream killed by it would look like a finished run
            self.log_proc = subprocess.Popen(["flwr", "log", run_id, CONNECTION], stdout=fh,
                                             stderr=subprocess.STDOUT, env=self.env, cwd=self.dir,
                                             start_new_session=True)
        return path

    def finished(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RunError(f"the local SuperLink exited with {self.proc.returncode}: "
                           f"{self._tail()}")
        return self.log_proc is not None and self.log_proc.poll() is not None

    def stop(self) -> None:
        import psutil

        extra = []
        if self.log_proc is not None and self.log_proc.poll() is None:
            extra = tree(self.log_proc.pid)
        kill_procs(extra, wait=5)
        if self.proc is not None:
            # flower-superlink outlives a SIGTERM by 10 s and more while a run is active;
            # nothing is lost by a SIGKILL after 2 s (checkpoints are written atomically)
            kill_session_tree(self.proc.pid, wait=2.0)
            try:
                self.proc.wait(timeout=5)
            except (subprocess.TimeoutExpired, psutil.Error):
                pass
        shutil.rmtree(self.dir, ignore_errors=True)


def run_fl_superlink(cfg, out_dir: str | Path, quiet: bool = False) -> dict:
    """One federated experiment on a private local SuperLink; returns summary.json's dict.

    Ctrl-C (or SIGTERM) stops every process of the run within seconds and raises
    :class:`RunInterrupted` saying how to resume; the checkpoint of the completed rounds stays.
    A run that fails raises :class:`RunError` (or :class:`UserError` for fedticket's own
    refusals) with the one line that says why; Flower's whole log of it is in ``flower.log``.
    """
    out = Path(out_dir).resolve()
    cfg.output_dir = str(out)
    rounds_csv, server_log = out / "rounds.csv", out / "server.log"
    main_thread = threading.current_thread() is threading.main_thread()
    # SIGTERM (a scheduler, `kill`) must stop the SuperLink too, not orphan it
    old_term = signal.signal(signal.SIGTERM, _raise_terminated) if main_thread else None
    # Ctrl-C: our own handler, whatever an imported library installed for SIGINT
    old_int = signal.signal(signal.SIGINT, _raise_terminated) if main_thread else None
    sim, bar = None, None
    try:
        from fedticket.fl.run import ray_address

        sim = LocalSimulation()
        sim.start(ray_address=ray_address(cfg))
        submitted = time.time() - 1.0  # file times may be coarse
        run_id = sim.submit(cfg)
        if not quiet:
            from tqdm.auto import tqdm

            bar = tqdm(total=cfg.rounds, desc=f"fl {cfg.method}", unit="round",
                       initial=0, file=sys.stderr)
        run_log = sim.stream_log(run_id)
        seen = [server_log.stat().st_size if server_log.exists() else 0]

        def finished() -> bool:
            if bar is not None:
                bar.update(max(0, _completed_rounds(rounds_csv) - bar.n))
                seen[0] = _echo_new_lines(server_log, seen[0], bar)
            return sim.finished()

        poll_until(finished, float("inf"), interval=0.5, what=f"run {run_id}")
        if bar is not None:
            bar.update(max(0, _completed_rounds(rounds_csv) - bar.n))
            bar.close()
            bar = None
        summary = out / "summary.json"
        if summary.exists() and summary.stat().st_mtime >= submitted:
            status = "finished:completed"  # the ServerApp's last act: no `flwr ls` start-up
        else:
            status = poll_until(lambda: (s if (s := sim.status(run_id)).startswith("finished")
                                         else None), 60.0, interval=1.0,
                                what=f"run {run_id}'s end")
        if status != "finished:completed":
            log_text = run_log.read_text(errors="replace") or sim.run_log(run_id)
            out.mkdir(parents=True, exist_ok=True)
            (out / "flower.log").write_text(log_text)
            exc = error_line(log_text)
            if exc and exc[0] in _USER_ERRORS:
                raise UserError(exc[1])
            why = f"{exc[0].rsplit('.', 1)[-1]}: {exc[1]}" if exc else status
            raise RunError(f"the run ended as {status}: {why} (Flower's log of it: "
                           f"{out / 'flower.log'})")
        return json.loads((out / "summary.json").read_text())
    except (KeyboardInterrupt, _Terminated):
        if bar is not None:
            bar.close()
            bar = None
        if sim is not None:
            sim.stop()
            sim = None
        done = _completed_rounds(rounds_csv)
        if (out / "checkpoint.safetensors").exists():
            hint = (f"{done} completed round(s) are checkpointed in {out}; continue with the "
                    f"same command plus --set server.resume=true (same --out)")
        else:
            hint = f"no round was checkpointed in {out}"
        raise RunInterrupted(hint) from None
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, old_term)
            signal.signal(signal.SIGINT, old_int)
        if bar is not None:
            bar.close()
        if sim is not None:
            sim.stop()


def _echo_new_lines(path: Path, offset: int, bar) -> int:
    """Show the server's warnings (faults, retries) under the progress bar as they come."""
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            chunk = fh.read()
    except OSError:
        return offset
    end = chunk.rfind(b"\n") + 1
    for line in chunk[:end].decode(errors="replace").splitlines():
        if "WARNING" in line or "ERROR" in line:
            bar.write(line, file=sys.stderr)
    return offset + end
