"""2:4 semi-structured sparse matmul vs dense, on CUDA only (skipped with a message on CPU).

    python simulations/lth_nm_speed.py [--size 4096] [--batch 4096] [--repeats 50]

Builds a 2:4 magnitude mask with ``fedticket.core.nm`` for a random fp16 ``size × size`` weight,
converts it with ``torch.sparse.to_sparse_semi_structured`` and times ``F.linear`` dense vs sparse
with CUDA events (median of ``--repeats``). Also checks the two outputs agree. Nothing is claimed
without this script's own numbers.
"""

from __future__ import annotations

import argparse
import statistics
import sys

import torch
from torch.nn import functional as F

from fedticket.core.nm import nm_mask_from_scores, semi_structured_available, semi_structured_linear


def _time(fn, repeats: int) -> float:
    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b))
    return statistics.median(times)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--repeats", type=int, default=50)
    args = ap.parse_args(argv)
    ok, why = semi_structured_available()
    if not ok:
        print(f"skipped: {why}")
        return 0
    g = torch.Generator().manual_seed(0)
    w = torch.randn(args.size, args.size, generator=g).half()
    mask = nm_mask_from_scores({"w": w.abs()}, 2, 4)["w"]
    dense_w = (w * mask).cuda()
    sparse_w = semi_structured_linear(w, mask)
    x = torch.randn(args.batch, args.size, generator=g).half().cuda()
    err = (F.linear(x, dense_w) - F.linear(x, sparse_w)).abs().max().item()
    t_dense = _time(lambda: F.linear(x, dense_w), args.repeats)
    t_sparse = _time(lambda: F.linear(x, sparse_w), args.repeats)
    print(f"{torch.cuda.get_device_name()}: fp16 linear {args.batch}x{args.size} @ "
          f"{args.size}x{args.size}: dense {t_dense:.3f} ms, 2:4 sparse {t_sparse:.3f} ms, "
          f"speed-up {t_dense / t_sparse:.2f}x (max abs diff {err:.3g})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
