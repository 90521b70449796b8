"""Short side-by-side probe of the sign-supermask methods (issue 10), NOT the issue's benchmark.

Every method runs the same config (configs/fl/bench_<method>.yaml + the same overrides: data,
partitions, seed, rounds) through the real strategy and ClientApp on the in-memory Grid
(``run_in_process``: no engine, no checkpoint, no personal evaluation), then one table is
printed: final and best global accuracy, the mean of the last 5 rounds (one round moves by
±0.02 on the Dirichlet bench, so it is the steadier number), uplink bytes per client and round and uplink bits per
kept weight (from the payloads), client train seconds per round (machine shared: compare ratios).

    OMP_NUM_THREADS=1 python simulations/fl_sign_probe.py --setting dirichlet --rounds 30
    OMP_NUM_THREADS=1 python simulations/fl_sign_probe.py --setting conv4 --rounds 10
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fedticket.fl.run import prepare  # noqa: E402
from fedticket.fl.server_app import run_in_process  # noqa: E402
from fedticket.results import read_csv  # noqa: E402

SETTINGS = {
    # issue 10's Dirichlet setting is the bench configs as they are
    "dirichlet": ([], "hidenseek,signscore,fedpm,binary-mask,fedavg-subnet"),
    # issue 10's second setting (the stall)
    "conv4": (["model.name=conv4", "data.partition=pathological", "data.classes_per_client=2",
               "train.local_epochs=3", "train.batch_size=128"], "hidenseek,signscore,fedpm"),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--setting", choices=sorted(SETTINGS), default="dirichlet")
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--methods", default=None, help="comma list (default: the setting's)")
    p.add_argument("--set", action="append", default=[], help="override for every method (k=v)")
    p.add_argument("--data-root", default=None)
    p.add_argument("--out", default=None,
                   help="keep each method's results folder (rounds.csv grows round by round) "
                        "under OUT/<method> instead of a temporary folder")
    return p.parse_args(argv)


def run_one(method: str, overrides: list[str], rounds: int, data_root, out=None) -> dict:
    cfg = prepare(REPO / "configs" / "fl" / f"bench_{method}.yaml", overrides, data_root)
    cfg.rounds, cfg.eval.personal_every, cfg.server.checkpoint = rounds, 0, False
    with tempfile.TemporaryDirectory(prefix="fl-sign-probe-") as tmp:
        if out is not None:
            tmp = str(Path(out) / method)
            Path(tmp).mkdir(parents=True, exist_ok=True)
        cfg.output_dir = tmp
        t0 = time.perf_counter()
        s = run_in_process(cfg, tmp)
        wall = time.perf_counter() - t0
        rows = [r for r in read_csv(Path(tmp) / "rounds.csv") if int(r["round"]) > 0]
    up = s["uplink_bytes_per_client_round"]
    return {"method": method, "final": s["final_global_accuracy"],
            "best": s["best_global_accuracy"], "up_bytes": up,
            "bits_per_kept": s["uplink_bits_per_kept_weight"], "kept": s["kept_weights"],
            "down_bits": s["downlink_bits_per_kept_weight"],
            "train_s": s["client_train_seconds_per_round"], "wall": wall,
            "curve": [float(r["global_accuracy"]) for r in rows]}


def main(argv=None) -> int:
    args = parse_args(argv)
    base, default_methods = SETTINGS[args.setting]
    methods = [m for m in (args.methods or default_methods).split(",") if m]
    overrides = base + list(args.set)
    print(f"short probe, not the issue's benchmark: setting={args.setting}, rounds={args.rounds}, "
          f"1 seed, overrides {overrides}", flush=True)
    res = []
    for m in methods:
        r = run_one(m, overrides, args.rounds, args.data_root, args.out)
        res.append(r)
        print(f"  {m}: done in {r['wall']:.0f} s; accuracy by round "
              f"{' '.join(f'{a:.3f}' for a in r['curve'])}", flush=True)
    print("\n| method | final acc | best acc | last 5 | uplink B/client/round | uplink bits/kept "
          "weight | downlink bits/kept weight | client train s/round |\n"
          "|---|---|---|---|---|---|---|---|")
    for r in res:
        last5 = sum(r["curve"][-5:]) / max(len(r["curve"][-5:]), 1)
        print(f"| {r['method']} | {r['final']:.4f} | {r['best']:.4f} | {last5:.4f} | {r['up_bytes']:.0f} "
              f"| {r['bits_per_kept']:.3f} | {r['down_bits']:.3f} | {r['train_s']:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
