"""Same config, same seed, same numbers: run federated configs and compare two result folders.

Run mode: ``--run DIR`` runs every job of ``--jobs`` (``name=config.yaml[,key=value...]``) with
the ``fedticket`` found on PYTHONPATH into ``DIR/<name>`` (``fedticket fl run --quiet``).
Compare mode: ``--compare A B`` compares ``rounds.csv`` and ``summary.json`` of every job folder
in ``A`` with the same folder in ``B`` column by column: accuracies, losses and byte counts
must be exactly equal; timings are left out (they are measurements, not results).

    PYTHONPATH=/old/tree python simulations/fl_equality_check.py --run /tmp/before
    PYTHONPATH=/new/tree python simulations/fl_equality_check.py --run /tmp/after
    python simulations/fl_equality_check.py --compare /tmp/before /tmp/after

Exit status 0 when every job is equal, 1 otherwise (each difference is printed).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

# quickstart as documented; the five benchmark configs cut to 3 rounds, personal eval at round 3
DEFAULT_JOBS = ["quick=configs/fl/quickstart.yaml"] + [
    f"bench_{m}=configs/fl/bench_{m}.yaml,rounds=3,eval.personal_every=3"
    for m in ("hidenseek", "fedavg", "fedavg-subnet", "fedpm", "binary-mask")]

EXACT_ROUND_COLUMNS = ("round", "global_accuracy", "personalized_accuracy", "uplink_bytes",
                       "downlink_bytes", "global_loss", "clients", "accepted", "rejected",
                       "missing", "setup_bytes", "eval_downlink_bytes")
TIMING_KEYS = {"client_train_seconds_per_round", "client_train_seconds_per_client_round",
               "round_wall_seconds", "setup_seconds", "wall_seconds"}


def parse_job(text: str) -> tuple[str, str, list[str]]:
    name, _, rest = text.partition("=")
    config, *overrides = rest.split(",")
    return name, config, overrides


def run_jobs(jobs: list[str], out: Path, repo: Path) -> int:
    out.mkdir(parents=True, exist_ok=True)
    for job in jobs:
        name, config, overrides = parse_job(job)
        cmd = [sys.executable, "-m", "fedticket", "fl", "run", "-c", str(repo / config),
               "--out", str(out / name), "--quiet"]
        for o in overrides:
            cmd += ["--set", o]
        print("+", " ".join(cmd), flush=True)
        rc = subprocess.call(cmd, cwd=repo, env=os.environ.copy())
        if rc:
            print(f"{name}: fedticket exited with {rc}", file=sys.stderr)
            return rc
    return 0


def _rows(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


def compare_folder(a: Path, b: Path) -> list[str]:
    diffs = []
    ra, rb = _rows(a / "rounds.csv"), _rows(b / "rounds.csv")
    if len(ra) != len(rb):
        diffs.append(f"rounds.csv: {len(ra)} rows vs {len(rb)}")
    for x, y in zip(ra, rb):
        for col in EXACT_ROUND_COLUMNS:
            if x.get(col) != y.get(col):
                diffs.append(f"rounds.csv round {x.get('round')} {col}: {x.get(col)} vs {y.get(col)}")
    sa = json.loads((a / "summary.json").read_text())
    sb = json.loads((b / "summary.json").read_text())
    for key in sorted(set(sa) | set(sb)):
        if key in TIMING_KEYS:
            continue
        if sa.get(key) != sb.get(key):
            diffs.append(f"summary.json {key}: {sa.get(key)!r} vs {sb.get(key)!r}")
    return diffs


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--run", metavar="DIR", help="run every job into DIR/<name>")
    g.add_argument("--compare", nargs=2, metavar=("A", "B"), help="compare two run folders")
    p.add_argument("--jobs", nargs="*", default=DEFAULT_JOBS,
                   help="name=config.yaml[,key=value...] (default: quickstart + 5 bench configs)")
    p.add_argument("--repo", default=str(Path(__file__).resolve().parents[1]),
                   help="where the configs are (default: this checkout)")
    args = p.parse_args(argv)
    if args.run:
        return run_jobs(args.jobs, Path(args.run), Path(args.repo))
    a, b = map(Path, args.compare)
    bad = 0
    for job in args.jobs:
        name = parse_job(job)[0]
        diffs = compare_folder(a / name, b / name)
        print(f"{name}: {'equal' if not diffs else f'{len(diffs)} difference(s)'}")
        for d in diffs:
            print(f"  {d}")
        bad += bool(diffs)
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
