"""``fedticket fl run`` as a user runs it: a real process, Flower's local SuperLink simulation.

The SuperLink path must give the very rows of the in-process engine for the same config and seed,
and Ctrl-C must stop every process the run started within seconds, keep the checkpoint of the
completed rounds and say how to resume.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow
TINY = ["num_clients=3", "clients_per_round=2", "data.train_subset=1500",
        "data.test_subset=500", "model.prune_iterations=10", "eval.personal_every=0",
        "data.download=false", "sim.num_cpus=2"]


def _data_root() -> Path:
    for cand in (os.environ.get("FEDTICKET_DATA"), REPO.parent / "shared" / "data"):
        if cand and (Path(cand) / "FashionMNIST" / "raw" / "train-images-idx3-ubyte").is_file():
            return Path(cand).resolve()
    pytest.skip("FashionMNIST not found: set FEDTICKET_DATA to a folder holding FashionMNIST/raw/")


def _cli(out: Path, *sets: str) -> list[str]:
    argv = [sys.executable, "-m", "fedticket", "fl", "run", "-c",
            str(REPO / "configs/fl/quickstart.yaml"), "--out", str(out), "--quiet",
            "--data-root", str(_data_root())]
    for s in [*TINY, *sets]:
        argv += ["--set", s]
    return argv


def _env(tmp_path: Path) -> dict:
    env = dict(os.environ, FLWR_HOME=str(tmp_path / "flwr-home"),
               FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="1", MPLBACKEND="Agg")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_cli_run_equals_the_in_process_engine(tmp_path):
    from fedticket.fl.run import prepare, run_fl

    a, b = tmp_path / "cli", tmp_path / "in-process"
    res = subprocess.run(_cli(a, "rounds=2"), capture_output=True, text=True,
                         env=_env(tmp_path), timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    # the setup message carries no server path: different folders, same bytes
    cfg = prepare(REPO / "configs/fl/quickstart.yaml", [*TINY, "rounds=2"],
                  data_root=str(_data_root()))
    run_fl(cfg, b, quiet=True)
    keys = ("round", "global_accuracy", "uplink_bytes", "downlink_bytes", "accepted")
    cli, inproc = _rows(a / "rounds.csv"), _rows(b / "rounds.csv")
    assert [[r[k] for k in keys] for r in cli] == [[r[k] for k in keys] for r in inproc]
    assert len(cli) == 3  # round 0 (the initial model) + 2 rounds


def test_ctrl_c_stops_everything_keeps_the_checkpoint_and_says_how_to_resume(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen(_cli(out, "rounds=50"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env(tmp_path),
                            start_new_session=True)  # its own group: the "terminal" we signal
    started: list = []
    try:
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline and proc.poll() is None:
            # round 1's row is written just before its checkpoint: wait for both
            if (out / "checkpoint.safetensors").exists() and any(
                    r["round"] not in ("", "0") for r in _rows(out / "rounds.csv")):
                break
            time.sleep(0.5)
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert (out / "checkpoint.safetensors").exists()
        started = psutil.Process(proc.pid).children(recursive=True)
        assert any("flower-superlink" in " ".join(p.cmdline()) for p in started)
        t0 = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        _, err = proc.communicate(timeout=30)
        took = time.monotonic() - t0
    finally:  # on a failed assertion too: nothing of the run may outlive the test
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        for p in started:
            try:
                p.kill()
            except psutil.Error:
                pass
    assert proc.returncode == 130, err[-3000:]
    print(f"Ctrl-C to exit: {took:.1f} s")
    assert took < 10, f"Ctrl-C took {took:.1f} s"
    left = [p for p in started if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not left, [" ".join(p.cmdline())[:120] for p in left]
    assert (out / "checkpoint.safetensors").exists()
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[-1].startswith("fedticket: interrupted") and "server.resume=true" in lines[-1]


def test_error_line_reads_the_exception_out_of_a_flower_log():
    from fedticket.deploy.simulation import error_line

    log = """Traceback (most recent call last):
  File "/x/fedticket/fl/server_app.py", line 172, in load_checkpoint
    raise UserError(f"{run_dir.path} holds the checkpoint")
fedticket.errors.UserError: /tmp/run holds the checkpoint of an earlier run; continue it
\x1b[91mERROR \x1b[0m:     Exit Code: 700
An unhandled exception occurred when running the simulation.
"""
    assert error_line(log) == ("fedticket.errors.UserError",
                               "/tmp/run holds the checkpoint of an earlier run; continue it")
    assert error_line("all good\n") is None
