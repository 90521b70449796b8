"""What each coder makes of SignScore's real payloads (issue 10, target 3): bytes per client and
round for the uplink (a client's stochastic signs) and the downlink (the global signs).

One short in-memory run of configs/fl/bench_signscore.yaml records every client's sign vector, the
global signs it was sent and the seed of its stochastic draw; each is then coded by: packed bits
(the ``fedticket.bits`` payload), zlib level 9 of the packed bits, zlib of the packed flips
against the reference, zstd (if the ``zstandard`` package is installed), the range coder with
one Bernoulli model (``fedticket.core.entropy`` without dither) and with the dither model (what
``signscore.uplink_coding: entropy`` sends). Downlink: the global signs against the ticket's
all-+1 signs. Every coded payload is decoded and checked.

    OMP_NUM_THREADS=1 python simulations/fl_sign_coding.py --rounds 10
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import zlib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from fedticket.core.codec import encode_bits, pack_bits  # noqa: E402
from fedticket.core.entropy import decode_delta, encode_delta  # noqa: E402
from fedticket.fl.methods import signscore  # noqa: E402
from fedticket.fl.run import prepare  # noqa: E402
from fedticket.fl.server_app import run_in_process  # noqa: E402


def coders():
    out = {
        "packed bits (fedticket.bits)": lambda b, r, s: len(encode_bits(b)),
        "zlib -9 of packed bits": lambda b, r, s: len(zlib.compress(pack_bits(b), 9)) + 8,
        "zlib -9 of packed flips": lambda b, r, s: len(zlib.compress(pack_bits(b ^ r), 9)) + 8,
    }
    try:
        import zstandard

        cz = zstandard.ZstdCompressor(level=19)
        out["zstd -19 of packed flips"] = lambda b, r, s: len(cz.compress(pack_bits(b ^ r))) + 8
    except ImportError:
        pass
    out["range coder, one p (flips)"] = lambda b, r, s: len(encode_delta(b, r))
    out["range coder, dither model"] = lambda b, r, s: len(encode_delta(b, r, dither_seed=s))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--set", action="append", default=[])
    p.add_argument("--data-root", default=None)
    args = p.parse_args(argv)
    up, down = [], []
    orig_update = signscore.SignScoreLearner.update
    orig_global = signscore.SignScoreMethod._global

    def update(self, server_round):
        array = orig_update(self, server_round)
        seed = signscore.client_seed(self.cfg, server_round, self.partition_id, 7)
        bits = signscore.decode_signs(array, self.net.num_kept, self._global)
        up.append((bits, self._global.clone(), seed))
        return array

    def global_(self, bits):
        down.append(bits.clone())
        return orig_global(self, bits)

    signscore.SignScoreLearner.update = update
    signscore.SignScoreMethod._global = global_
    cfg = prepare(REPO / "configs" / "fl" / "bench_signscore.yaml", args.set, args.data_root)
    cfg.rounds, cfg.eval.personal_every, cfg.server.checkpoint = args.rounds, 0, False
    with tempfile.TemporaryDirectory(prefix="fl-sign-coding-") as tmp:
        cfg.output_dir = tmp
        s = run_in_process(cfg, tmp)
    kept = s["kept_weights"]
    ones = torch.ones(kept, dtype=torch.bool)
    for b, r, seed in up:                      # every coded payload decodes exactly
        assert torch.equal(decode_delta(encode_delta(b, r, dither_seed=seed), r), b)
    flips = statistics.fmean(float((b ^ r).float().mean()) for b, r, _ in up)
    print(f"{len(up)} client updates and {len(down)} global payloads over {args.rounds} rounds, "
          f"{kept} kept weights; mean client flip fraction vs the broadcast signs {flips:.3f}; "
          f"final global accuracy {s['final_global_accuracy']:.4f}\n")
    print("| coder | uplink B / client / round | uplink bits / kept | downlink B / round | "
          "downlink bits / kept |\n|---|---|---|---|---|")
    for name, f in coders().items():
        u = statistics.fmean(f(b, r, seed) for b, r, seed in up)
        if "dither" in name:                  # the global signs are not a stochastic draw
            print(f"| {name} | {u:,.0f} | {8 * u / kept:.3f} | — | — |")
            continue
        d = statistics.fmean(f(g, ones, None) for g in down)
        print(f"| {name} | {u:,.0f} | {8 * u / kept:.3f} | {d:,.0f} | {8 * d / kept:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
