"""A real Flower deployment on one machine: SuperLink + SuperNodes as separate processes.

Used by the integration test (``tests/e2e/test_deploy_e2e.py``), the edge-footprint benchmark
(``simulations/edge_footprint.py``) and ``fedticket deploy local`` (try the recipe of
``docs/deploy.md`` on one machine before touching devices). Everything goes through Flower's own
programs (``flower-superlink``, ``flower-supernode``, ``flwr``) with TLS and SuperNode
authentication on; nothing here speaks a protocol of its own.

Every process started is remembered by PID and stopped, with all its descendants (Flower's
``flower-superexec``, ``flwr-serverapp`` and ``flwr-clientapp`` children), by :meth:`stop_all`,
which ``with LocalFederation(...)`` calls in a ``finally``. Ports are chosen free at run time.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from fedticket.deploy import pki
from fedticket.deploy.commands import (
    flwr_json,
    run_config_arg,
    superlink_command,
    supernode_command,
)
from fedticket.deploy.flwrconf import write_connection
from fedticket.deploy.poll import poll_until
from fedticket.deploy.procs import free_port, kill_tree, tree

CONNECTION = "fedticket-local"


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log: Path
    port: int | None = None
    extra: dict = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


class LocalFederation:
    """One SuperLink and its SuperNodes on 127.0.0.1, with TLS and SuperNode authentication."""

    def __init__(self, workdir: str | Path, app_dir: str | Path, data_root: str | Path | None = None,
                 host: str = "127.0.0.1", env: Mapping[str, str] | None = None):
        self.dir = Path(workdir).resolve()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.app_dir = Path(app_dir).resolve()
        self.host = host
        self.data_root = str(Path(data_root).resolve()) if data_root else None
        self.certs = self.dir / "certs"
        self.keys = self.dir / "keys"
        self.database = self.dir / "superlink.db"
        self.port = free_port(host)
        self.env = dict(os.environ)
        self.env.update({"FLWR_HOME": str(self.dir / "flwr-home"),
                         "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
                         "PYTHONUNBUFFERED": "1"})
        if self.data_root:
            self.env["FEDTICKET_DATA"] = self.data_root
        self.env.update(env or {})
        self.procs: list[Proc] = []
        self.superlink: Proc | None = None
        self.node_ids: dict[str, int] = {}
        self._ports: set[int] = {self.port}
        if not (self.certs / pki.CA_CERT).exists():
            pki.make_certs(self.certs, [host, "localhost"])
        write_connection(CONNECTION, f"{host}:{self.port}",
                                root_certificates=self.certs / pki.CA_CERT,
                                home=self.env["FLWR_HOME"])

    # ---- context manager: stop everything, whatever happened ---------------------------------
    def __enter__(self) -> "LocalFederation":
        return self

    def __exit__(self, *exc) -> None:
        self.stop_all()

    # ---- processes ---------------------------------------------------------------------------
    def _spawn(self, name: str, cmd: list[str], port: int | None = None) -> Proc:
        log = self.dir / f"{name}.log"
        fh = open(log, "ab")
        popen = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=self.env,
                                 cwd=self.dir, start_new_session=True)
        fh.close()
        proc = Proc(name, popen, log, port)
        self.procs.append(proc)
        if port:
            self._ports.add(port)
        return proc

    def flwr(self, *args: str, timeout: float = 120.0, check: bool = True
             ) -> subprocess.CompletedProcess:
        cmd = ["flwr", *args]
        res = subprocess.run(cmd, capture_output=True, text=True, env=self.env, cwd=self.app_dir,
                             timeout=timeout)
        if check and res.returncode != 0:
            raise RuntimeError(f"`flwr {' '.join(args)}` failed ({res.returncode}): "
                               f"{res.stdout[-2000:]}{res.stderr[-2000:]}")
        return res

    def start_superlink(self, timeout: float = 60.0) -> Proc:
        cmd = superlink_command(self.certs, self.database, port=self.port, host=self.host)
        log = self.dir / "superlink.log"
        start = log.stat().st_size if log.exists() else 0  # a restart appends to the same log
        proc = self._spawn("superlink", cmd, self.port)
        self.superlink = proc

        def started() -> bool:
            if not proc.alive():
                raise RuntimeError(f"the SuperLink exited ({proc.popen.returncode}):\n"
                                   f"{proc.text()[-3000:]}")
            return "Uvicorn running on" in proc.text()[start:]

        try:
            poll_until(started, timeout, interval=0.2, what="SuperLink start")
        except TimeoutError as e:
            raise TimeoutError(f"{e}:\n{proc.text()[-3000:]}") from None
        return proc

    def make_key(self, name: str) -> Path:
        priv, _pub = pki.make_node_key(self.keys, name, force=True)
        return priv

    def register(self, name: str) -> int:
        """``flwr supernode register`` the key ``name`` (made if missing); returns the node id."""
        if not (self.keys / name).exists():
            self.make_key(name)
        res = self.flwr("supernode", "register", str(self.keys / f"{name}.pub"), CONNECTION,
                        "--format", "json")
        out = flwr_json(res.stdout)
        if not out.get("success"):
            raise RuntimeError(f"registering {name} failed: {res.stdout}")
        self.node_ids[name] = int(out["node-id"])
        return self.node_ids[name]

    def start_supernode(self, name: str, partition_id: int, num_partitions: int,
                        state_dir: str | Path | None = None) -> Proc:
        """One SuperNode with the key ``name`` (registered or not: the SuperLink decides)."""
        if not (self.keys / name).exists():
            self.make_key(name)
        port = free_port(self.host)
        cmd = supernode_command(f"{self.host}:{self.port}", partition_id, num_partitions,
                                       root_certificates=self.certs / pki.CA_CERT,
                                       key=self.keys / name, port=port, data_root=self.data_root,
                                       state_dir=state_dir)
        proc = self._spawn(name, cmd, port)
        proc.extra.update(partition_id=partition_id, num_partitions=num_partitions,
                          state_dir=state_dir)
        return proc

    def restart(self, proc: Proc) -> Proc:
        """Start the same SuperNode again (same key, partition and port-free new port)."""
        return self.start_supernode(proc.name, proc.extra["partition_id"],
                                    proc.extra["num_partitions"], proc.extra.get("state_dir"))

    def online_nodes(self) -> set[int]:
        res = self.flwr("supernode", "list", CONNECTION, "--format", "json", check=False)
        try:
            data = flwr_json(res.stdout)
        except ValueError:
            return set()
        return {int(n["node-id"]) for n in data.get("nodes", [])
                if str(n.get("status", "")).lower() == "online"}

    def wait_online(self, names, timeout: float = 90.0) -> None:
        want = {self.node_ids[n] for n in names}
        poll_until(lambda: want <= self.online_nodes(), timeout, interval=0.5,
                   what=f"SuperNodes {sorted(names)} online")

    def wait_offline(self, name: str, timeout: float = 150.0) -> float:
        """Wait until the SuperLink no longer lists ``name`` online; returns the seconds waited.

        A SIGKILLed SuperNode stays "online" until its heartbeat expires (Flower: about
        2 x 30 s); a new process with the same key is refused activation until then.
        """
        t0 = time.monotonic()
        poll_until(lambda: self.node_ids[name] not in self.online_nodes(), timeout,
                   interval=1.0, what=f"SuperNode {name} offline")
        return time.monotonic() - t0

    def run(self, run_config: Mapping[str, Any]) -> int:
        """``flwr run APP CONNECTION --run-config ...``; returns the run id."""
        res = self.flwr("run", str(self.app_dir), CONNECTION, "--run-config",
                        run_config_arg(run_config), "--format", "json")
        try:
            out = flwr_json(res.stdout)
        except ValueError:
            out = {}
        if not out.get("success", True) or "run-id" not in out:
            raise RuntimeError(f"flwr run failed: {res.stdout}{res.stderr}")
        return int(out["run-id"])

    def run_status(self, run_id: int) -> str:
        res = self.flwr("ls", CONNECTION, "--run-id", str(run_id), "--format", "json", check=False)
        try:
            return str(flwr_json(res.stdout)["runs"][0]["status"])
        except (ValueError, KeyError, IndexError):
            return "unknown"

    def wait_run(self, run_id: int, timeout: float) -> str:
        def finished() -> str | None:
            status = self.run_status(run_id)
            return status if status.startswith("finished") else None

        return poll_until(finished, timeout, interval=1.0, what=f"run {run_id} finished")

    def logs(self, run_id: int) -> str:
        return self.flwr("log", str(run_id), CONNECTION, "--show", check=False).stdout

    def kill(self, proc: Proc, sig: int = signal.SIGKILL) -> None:
        """Stop one process and its whole tree (SIGKILL by default: a crash, not a goodbye)."""
        kill_tree(proc.pid, sig)
        try:
            proc.popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        self._sweep({proc.port} if proc.port else set())

    def serverapps(self) -> list[int]:
        """PIDs of the running ``flwr-serverapp`` processes (the ServerApp of each run)."""
        import psutil

        if self.superlink is None:
            return []
        out = []
        for p in tree(self.superlink.pid):
            try:
                if "flwr-serverapp" in " ".join(p.cmdline()):
                    out.append(p.pid)
            except psutil.Error:
                continue
        return out

    def kill_serverapp(self) -> int:
        """SIGKILL the ServerApp process (the fedticket server) of the running run."""
        pids = self.serverapps()
        if len(pids) != 1:
            raise RuntimeError(f"expected one flwr-serverapp process, found {pids}")
        kill_tree(pids[0], signal.SIGKILL)
        return pids[0]

    def _sweep(self, ports: set[int]) -> None:
        """Flower's app processes can outlive their parents (reparented to init); find them
        by the runtime address they were given, which names one of our ports."""
        import psutil

        marks = [f"{self.host}:{p}" for p in ports if p]
        if not marks:
            return
        for p in psutil.process_iter(["pid", "cmdline"]):
            cmd = " ".join(p.info.get("cmdline") or [])
            if any(m in cmd for m in marks) and p.pid != os.getpid():
                kill_tree(p.pid, signal.SIGKILL, wait=5)

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            if proc.alive() or tree(proc.pid):
                kill_tree(proc.pid, signal.SIGTERM, wait=5)
            try:
                proc.popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        self._sweep(self._ports)


# ---- `fedticket deploy local` -------------------------------------------------------------------
def project_dir() -> Path:
    """The source checkout holding ``[tool.flwr.app]`` (``flwr run`` packages the app from it)."""
    here = Path(__file__).resolve()
    for d in here.parents:
        toml = d / "pyproject.toml"
        if toml.is_file() and "[tool.flwr.app]" in toml.read_text(errors="replace"):
            return d
    from fedticket.errors import UserError

    raise UserError("fedticket deploy local needs a source checkout of fedticket (flwr run "
                    "builds the app from its pyproject.toml); clone it and `pip install -e .`")


def run_local(nodes: int, rounds: int, out: str | Path, overrides=(), data_root=None,
              quiet: bool = False, timeout: float = 3600.0, overwrite: bool = False) -> dict:
    """Steps 1-6 of docs/deploy.md on 127.0.0.1; returns summary.json's content."""
    import csv as _csv

    from fedticket.config import flatten, parse_overrides
    from fedticket.errors import UserError
    from fedticket.fl.run import FL_RESULT_FILES, prepare
    from fedticket.results import check_output_dir, clear_results

    if nodes < 1:
        raise UserError(f"--nodes must be >= 1, got {nodes}")
    out = Path(out).resolve()
    check_output_dir(out, overwrite=True)  # a file, unwritable: refused before anything starts
    check_output_dir(out / "results", overwrite=overwrite)
    if overwrite:
        clear_results(out / "results", FL_RESULT_FILES)
    flat: dict[str, Any] = {"num_clients": nodes, "clients_per_round": nodes, "rounds": rounds,
                            "output_dir": str(out / "results")}
    # TOML has no null: the app's run config spells it "" (fedticket.fl.config reads it back)
    flat.update({k: "" if v is None else v for k, v in flatten(parse_overrides(overrides)).items()})
    # validate everything (keys, values, data) here, before any process starts
    cfg = prepare(None, [f"{k}={'null' if v == '' else v}" for k, v in flat.items()],
                  data_root=data_root)
    flat["data.root"] = cfg.data.root
    app = project_dir()
    bar = None
    with LocalFederation(out / "federation", app, data_root=cfg.data.root) as fed:
        fed.start_superlink()
        names = [f"node{i}" for i in range(nodes)]
        for n in names:
            fed.register(n)
        for i, n in enumerate(names):
            fed.start_supernode(n, i, nodes, state_dir=out / "federation" / f"state-{n}")
        fed.wait_online(names, timeout=120 + 10 * nodes)
        run_id = fed.run(flat)
        if not quiet:
            from tqdm.auto import tqdm

            print(f"run {run_id}: SuperLink 127.0.0.1:{fed.port} (TLS, SuperNode auth), "
                  f"{nodes} SuperNodes; logs in {fed.dir}")
            bar = tqdm(total=rounds, desc=f"deploy {cfg.method}", unit="round")
        rounds_csv = out / "results" / "rounds.csv"
        last_check = [0.0]

        def finished() -> str | None:
            if bar is not None and rounds_csv.exists():
                with open(rounds_csv, newline="") as fh:
                    done = sum(1 for r in _csv.DictReader(fh) if r["round"] != "0")
                bar.update(done - bar.n)
            if time.monotonic() - last_check[0] < 3.0:  # flwr ls costs a process start
                return None
            last_check[0] = time.monotonic()
            status = fed.run_status(run_id)
            return status if status.startswith("finished") else None

        try:
            status = poll_until(finished, timeout, interval=0.5, what=f"run {run_id} finished")
        except TimeoutError:
            status = "running"
        finally:
            if bar is not None:
                bar.close()
        if status != "finished:completed":
            raise RuntimeError(f"run {run_id} ended as {status!r}; its log:\n"
                               f"{fed.logs(run_id)[-4000:]}")
    return json.loads((out / "results" / "summary.json").read_text())
