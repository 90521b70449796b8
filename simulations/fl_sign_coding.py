"""What each coder makes of SignScore's real payloads (issue 10, target 3): bytes per client and
round for the uplink (a client's stochastic signs) and the downlink (the global signs).

One short in-memory run of configs/fl/bench_signscore.yaml records every client's sign vector, the
global signs it was sent and the seed of its stochastic draw; each is then coded by: packed bits
(the ``fedticket.bits`` payload), zlib level 9 of the packed bits, zlib of the packed flips
against the reference, zstd (if the ``zstandard`` package is installed), the range coder with
one Bernoulli model (``fedticket.core.entropy`` without dither) and with the dither model (what
``signscore.uplink_coding: entropy`` sends). Every coded payload is decoded and checked.

Downlink, per train message (the node and round of each are recorded): the global signs against
the ticket's all-+1 signs (one p, or one p per layer: the core coder's context model), and
against the last global that node trained from (``signscore.downlink_reference: held``: the
smaller of the two is what a ``fedticket.rbits`` payload carries; one p, or one p per (layer,
reference differs from the ticket) class), zlib / zstd of the packed flips against it. The
"what held sends" row is recomputed with the real payload function and checked against the
run's own ``summary.json`` byte count.

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
    up, down, sampled, layers = [], [], [], []
    orig_update = signscore.SignScoreLearner.update
    orig_global = signscore.SignScoreMethod._global

    def update(self, server_round):
        sampled.append((server_round, self.partition_id))
        array = orig_update(self, server_round)
        seed = signscore.client_seed(self.cfg, server_round, self.partition_id, 7)
        bits = signscore.decode_signs(array, self.net.num_kept, self._global)
        up.append((bits, self._global.clone(), seed))
        return array

    def global_(self, bits):
        if not layers:
            layers.append(layer_ids(self.ticket.mask))
        down.append(bits.clone())
        return orig_global(self, bits)

    signscore.SignScoreLearner.update = update
    signscore.SignScoreMethod._global = global_
    # it studies the sign vote's bits, whatever the bench config votes with
    cfg = prepare(REPO / "configs" / "fl" / "bench_signscore.yaml",
                  ["signscore.uplink_vote=sign", *args.set], args.data_root)
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
    rows = downlink_per_message(down, sampled, layers[0], ones)
    want = s["downlink_bytes_per_client_round"]
    print(f"\nDownlink per train message ({len(sampled)} messages; down[r-1] is round r's):\n\n"
          "| coder | downlink B / message | downlink bits / kept |\n|---|---|---|")
    for name, sizes in rows.items():
        d = statistics.fmean(sizes)
        print(f"| {name} | {d:,.0f} | {8 * d / kept:.3f} |")
    sent = statistics.fmean(rows[HELD])
    print(f"\nsummary.json downlink_bytes_per_client_round {want:,.1f}, recomputed {sent:,.1f}")
    if want is not None and s["downlink_bits_per_kept_weight"] is not None and \
            cfg.signscore.downlink_reference == "held":
        assert abs(sent - want) < 1e-6, "the recomputed held payloads are not what the run sent"
    return 0


HELD = "range coder vs held, else ticket (what `held` sends, `fedticket.rbits`)"


def layer_ids(mask):
    """The layer of each kept entry, in the payload's order (the mask's layers, row-major)."""
    return torch.cat([torch.full((int(mask[n].sum()),), i, dtype=torch.long)
                      for i, n in enumerate(mask.keys())]).numpy()


def downlink_per_message(down, sampled, layer, ones):
    """Bytes of each train message's downlink under each coder (see the module docstring)."""
    from fedticket.fl import wire

    zstd = None
    try:
        import zstandard

        zstd = zstandard.ZstdCompressor(level=19)
    except ImportError:
        pass
    held: dict[int, int] = {}
    names = ["range coder vs ticket, one p", "range coder vs ticket, one p per layer",
             HELD, "range coder vs held, one p per (layer, held ≠ ticket)",
             "zlib -9 of packed flips vs held", "zstd -19 of packed flips vs held"]
    out = {n: [] for n in names if zstd is not None or "zstd" not in n}
    rounds = sorted({r for r, _ in sampled})
    for r in rounds:
        g = down[r - 1]
        tk = len(wire.referenced_bits_array(g, ones, None).data)
        tk_layer = len(encode_delta(g, ones, context=layer)) + 16
        for pid in sorted({p for rr, p in sampled if rr == r}):
            h = held.get(pid)
            out["range coder vs ticket, one p"].append(tk)
            out["range coder vs ticket, one p per layer"].append(tk_layer)
            if h is None:    # never trained: the ticket is all it holds
                for n in names[2:]:
                    if n in out:
                        out[n].append(tk if "layer" not in n else tk_layer)
                continue
            ref = down[h - 1]
            own = wire.referenced_bits_array(g, ref, h)
            assert torch.equal(wire.decode_referenced_bits_array(own, g.numel(), ones, (h, ref)), g)
            out[HELD].append(min(tk, len(own.data)))
            ctx = (~ref).long().numpy() * (int(layer.max()) + 1) + layer
            out[names[3]].append(min(tk_layer, len(encode_delta(g, ref, context=ctx)) + 16))
            flips = pack_bits(g ^ ref)
            out[names[4]].append(min(tk, len(zlib.compress(flips, 9)) + 16))
            if zstd is not None:
                out[names[5]].append(min(tk, len(zstd.compress(flips)) + 16))
        for pid in {p for rr, p in sampled if rr == r}:
            held[pid] = r
    return out


if __name__ == "__main__":
    raise SystemExit(main())
