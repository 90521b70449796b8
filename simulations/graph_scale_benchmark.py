"""Scale of the TEDDY edge score and the sparsifying transform: time and peak memory vs |E|.

For each size a *fresh subprocess* (so one size's allocator state does not leak into the next)
builds a seeded random undirected graph with a skewed degree distribution (average degree 10,
endpoints drawn with density ∝ x^-1/2, so there are hubs), then measures

* ``score``: :func:`graph.scores.teddy_edge_score` (the per-edge score, float64);
* ``transform``: :class:`graph.transforms.TeddyEdgeSparsify` at sparsity 0.3 on a ``Data``
  (pairs, scores, the ranking sort, the keep mask and the filtered ``edge_index``);

each as the best wall time of ``--repeats`` runs and, in one more run, as the *peak RSS above
the RSS just before the call*, sampled every millisecond by a thread (psutil); this counts every
allocation torch makes, which tracemalloc would not see. Beside them, timed the same way on the
same graph, a reference made of the primitives the score is built from (one int64 sort of the
E edge keys, one gather + weighted bincount over E edges): on a real machine even these grow
faster than |E| once the node arrays leave the CPU caches, so the score / reference ratio is
the machine-independent check. Both directions of every edge are checked to get the
bit-identical score, and the transform's output to be exactly symmetric with the exact count.
The fitted log-log slope (time or memory against |E|, least squares over the sizes >= 1e5, where
the fixed costs no longer dominate) is printed: 1 means linear.

    OMP_NUM_THREADS=1 python simulations/graph_scale_benchmark.py \\
        --sizes 1e4,3e4,1e5,3e5,1e6,3e6,1e7 --out results/graph_scale
    # writes results/graph_scale/scale.json, scale.md and scale.png (log-log)
    # add --minibatch-edges 1e7 for a neighbour-sampled GCN on the largest graph (peak RSS
    # beside the full-batch estimate)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def random_graph(num_edges: int, seed: int):
    """``num_edges`` directed edges (both directions of ``num_edges // 2`` pairs), N = E / 10."""
    import torch

    m = max(num_edges // 2, 1)
    n = max(num_edges // 10, 2)
    g = torch.Generator().manual_seed(seed)
    # u = floor(n * r^2): density ∝ x^-1/2, low ids are hubs
    u = (torch.rand(m, generator=g, dtype=torch.float64).square_() * n).long().clamp_(max=n - 1)
    v = torch.randint(0, n, (m,), generator=g)
    return torch.cat([torch.stack([u, v]), torch.stack([v, u])], dim=1), n


class PeakRSS:
    """Peak resident memory above the level at ``__enter__``, sampled every millisecond."""

    def __init__(self):
        import psutil

        self.proc = psutil.Process()

    def __enter__(self):
        self.base = self.peak = self.proc.memory_info().rss
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._poll, daemon=True)
        self._t.start()
        return self

    def _poll(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.001)

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)
        self.delta = self.peak - self.base


def _trim():
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # give freed pages back so the next delta is honest
    except OSError:
        pass


def measure(num_edges: int, seed: int, repeats: int, sparsity: float) -> dict:
    """One size, in this process: times, peak RSS deltas, symmetry checks."""
    import torch
    from torch_geometric.data import Data

    from graph.edges import num_removed, undirected_pairs
    from graph.scores import teddy_edge_score
    from graph.transforms import TeddyEdgeSparsify

    ei, n = random_graph(num_edges, seed)
    row = {"edges": int(ei.size(1)), "nodes": n}

    def timed(fn):
        """Best wall time of ``repeats`` plain runs, then one more run under the RSS sampler
        (its polling thread would otherwise add to the times)."""
        best = math.inf
        for _ in range(repeats):
            _trim()
            t0 = time.perf_counter()
            out = fn()
            best = min(best, time.perf_counter() - t0)
            del out
        _trim()
        with PeakRSS() as mem:
            out = fn()
        return out, best, mem.delta

    # reference: the machine's own linear-ish primitives on the same graph, timed side by side,
    # one int64 sort of E keys and one gather + weighted bincount over E edges; a constant
    # score / reference ratio across sizes means the score scales like those primitives
    key = ei[0] * n + ei[1]
    w = torch.rand(n, dtype=torch.float64)
    _, row["ref_sort_s"], _ = timed(lambda: torch.sort(key))
    _, row["ref_gather_s"], _ = timed(lambda: torch.bincount(ei[0], weights=w[ei[1]],
                                                              minlength=n))
    scores, row["score_s"], row["score_peak_bytes"] = timed(lambda: teddy_edge_score(ei, n))
    # exact symmetry: score(u->v) == score(v->u) bit for bit (the generator lists u->v at e and
    # v->u at e + m, so the check is a plain comparison of the two halves)
    m = ei.size(1) // 2
    row["score_symmetric"] = bool(torch.equal(scores[:m], scores[m:]))
    del scores
    data = Data(edge_index=ei, num_nodes=n)
    out, row["transform_s"], row["transform_peak_bytes"] = timed(
        lambda: TeddyEdgeSparsify(sparsity)(data))
    kept = out.edge_index
    key = kept[0] * n + kept[1]
    rkey = kept[1] * n + kept[0]
    sk = torch.sort(key).values
    pos = torch.searchsorted(sk, rkey).clamp(max=sk.numel() - 1)
    row["transform_symmetric"] = bool((sk[pos] == rkey).all()) if sk.numel() else True
    pairs_total = undirected_pairs(ei, n).num_pairs
    pairs_kept = undirected_pairs(kept, n).num_pairs
    row["exact_count"] = pairs_kept == pairs_total - num_removed(sparsity, pairs_total)
    row["input_bytes"] = ei.numel() * ei.element_size()
    return row


def minibatch_at_scale(num_edges: int, seed: int, sparsity: float, batches: int) -> dict:
    """Neighbour-sampled GCN training on the random graph: peak RSS and time per batch, beside
    the full-batch estimate of :func:`graph.minibatch.full_batch_bytes` for the same model."""
    import torch
    from torch_geometric.data import Data

    from graph.minibatch import full_batch_bytes, neighbor_loader
    from graph.models import build_model
    from graph.transforms import TeddyEdgeSparsify

    torch.manual_seed(seed)
    ei, n = random_graph(num_edges, seed)
    classes, feats, hidden = 10, 64, 512
    y = torch.randint(0, classes, (n,))
    x = torch.randn(n, feats) * 0.5
    x[torch.arange(n), y] += 1.0  # features that hint at the class, so the loss can fall
    data = Data(x=x, y=y, edge_index=ei, num_nodes=n)
    _trim()
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        data = TeddyEdgeSparsify(sparsity)(data)
        t_sparsify = time.perf_counter() - t0
        model = build_model("gcn", feats, classes, hidden=hidden)
        opt = torch.optim.Adam(model.parameters(), lr=0.01)
        loader = neighbor_loader(data, [10, 10], batch_size=1024, shuffle=True)
        losses, t1 = [], time.perf_counter()
        for i, batch in enumerate(loader):
            if i == batches:
                break
            opt.zero_grad()
            out = model(batch.x, batch.edge_index)[: batch.batch_size]
            loss = torch.nn.functional.cross_entropy(out, batch.y[: batch.batch_size])
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        t_batches = time.perf_counter() - t1
    return {"edges": int(ei.size(1)), "nodes": n, "hidden": hidden, "sparsify_s": t_sparsify,
            "batch_s": t_batches / max(len(losses), 1), "batches": len(losses),
            "loss_first": losses[0], "loss_last": losses[-1], "peak_bytes": mem.delta,
            "full_batch_estimate_bytes": full_batch_bytes(n, data.edge_index.size(1), feats,
                                                          hidden)}


def slope(xs, ys) -> float:
    if len(set(xs)) < 2:
        return float("nan")
    lx = [math.log(x) for x in xs]
    ly = [math.log(max(y, 1e-12)) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly, strict=True)) / \
        sum((a - mx) ** 2 for a in lx)


def plot(rows, path: Path):
    import matplotlib.pyplot as plt

    e = [r["edges"] for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.loglog(e, [r["score_s"] for r in rows], "o-", label="teddy_edge_score")
    ax1.loglog(e, [r["transform_s"] for r in rows], "s-", label="TeddyEdgeSparsify(0.3)")
    ax1.loglog(e, [r["ref_sort_s"] + r["ref_gather_s"] for r in rows], "^--",
               label="reference: int64 sort + gather")
    ref = rows[-1]["transform_s"] / e[-1]
    ax1.loglog(e, [ref * x for x in e], "k:", label="slope 1")
    ax1.set_xlabel("directed edges |E|")
    ax1.set_ylabel("seconds (best of repeats)")
    ax1.legend()
    ax1.grid(True, which="both", alpha=0.3)
    mib = 2 ** 20
    ax2.loglog(e, [max(r["score_peak_bytes"], 1) / mib for r in rows], "o-", label="score")
    ax2.loglog(e, [max(r["transform_peak_bytes"], 1) / mib for r in rows], "s-", label="transform")
    ax2.loglog(e, [r["input_bytes"] / mib for r in rows], "k:", label="edge_index itself")
    ax2.set_xlabel("directed edges |E|")
    ax2.set_ylabel("peak RSS above start (MiB)")
    ax2.legend()
    ax2.grid(True, which="both", alpha=0.3)
    fig.suptitle("TEDDY edge score and transform: time and memory vs |E| (log-log)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="1e4,3e4,1e5,3e5,1e6,3e6,1e7")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=3, help="best-of this many runs per size")
    p.add_argument("--sparsity", type=float, default=0.3)
    p.add_argument("--out", default="results/graph_scale")
    p.add_argument("--minibatch-edges", type=float, default=0,
                   help="also train a GCN over NeighborLoader batches on a graph this large")
    p.add_argument("--minibatch-batches", type=int, default=20)
    p.add_argument("--one", type=float, help=argparse.SUPPRESS)  # child mode: one size, JSON out
    p.add_argument("--one-minibatch", type=float, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.one_minibatch is not None:
        print(json.dumps(minibatch_at_scale(int(a.one_minibatch), a.seed, a.sparsity,
                                            a.minibatch_batches)))
        return 0
    if a.one is not None:
        print(json.dumps(measure(int(a.one), a.seed, a.repeats, a.sparsity)))
        return 0
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    sizes = [float(s) for s in a.sizes.split(",")]
    rows = []
    from tqdm.auto import tqdm

    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for s in tqdm(sizes, desc="sizes", unit="size"):
        res = subprocess.run([sys.executable, __file__, "--one", str(s), "--seed", str(a.seed),
                              "--repeats", str(a.repeats), "--sparsity", str(a.sparsity)],
                             capture_output=True, text=True, env=env, check=False)
        if res.returncode != 0:
            print(f"size {s:.0e} failed:\n{res.stderr[-2000:]}", file=sys.stderr)
            return 1
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
    big = [r for r in rows if r["edges"] >= 1e5]
    big = big if len(big) >= 2 else rows
    fits = {k: slope([r["edges"] for r in big], [r[k] for r in big])
            for k in ("score_s", "transform_s", "ref_sort_s", "ref_gather_s", "score_peak_bytes",
                      "transform_peak_bytes")}
    lines = ["| directed edges | nodes | score (s) | transform (s) | reference sort + gather (s) | "
             "score / reference | score peak RSS (MiB) | transform peak RSS (MiB) | "
             "edge_index (MiB) | symmetric (score / transform) | exact count |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    mib = 2 ** 20
    for r in rows:
        ref = r["ref_sort_s"] + r["ref_gather_s"]
        lines.append(f"| {r['edges']:,} | {r['nodes']:,} | {r['score_s']:.4f} | "
                     f"{r['transform_s']:.4f} | {ref:.4f} | {r['score_s'] / ref:.2f} | "
                     f"{r['score_peak_bytes'] / mib:.1f} | "
                     f"{r['transform_peak_bytes'] / mib:.1f} | {r['input_bytes'] / mib:.1f} | "
                     f"{r['score_symmetric']} / {r['transform_symmetric']} | {r['exact_count']} |")
    lines.append("")
    lines.append("log-log slopes over |E| >= 1e5: " + ", ".join(f"{k} {v:.2f}"
                                                              for k, v in fits.items()))
    # the slope between neighbouring sizes shows where growth departs from linear
    for a_, b_ in zip(rows, rows[1:]):
        loc = {k: slope([a_["edges"], b_["edges"]], [a_[k], b_[k]])
               for k in ("score_s", "transform_s")}
        lines.append(f"- local slope {a_['edges']:.0e} -> {b_['edges']:.0e}: score "
                     f"{loc['score_s']:.2f}, transform {loc['transform_s']:.2f}")
    if a.minibatch_edges:
        res = subprocess.run([sys.executable, __file__, "--one-minibatch", str(a.minibatch_edges),
                              "--seed", str(a.seed), "--sparsity", str(a.sparsity),
                              "--minibatch-batches", str(a.minibatch_batches)],
                             capture_output=True, text=True, env=env, check=False)
        if res.returncode != 0:
            print(f"mini-batch run failed:\n{res.stderr[-2000:]}", file=sys.stderr)
            return 1
        mb = json.loads(res.stdout.strip().splitlines()[-1])
        (out / "minibatch.json").write_text(json.dumps(mb, indent=2))
        lines += ["", f"Mini-batch GCN (hidden {mb['hidden']}, fanout (10, 10), 1024 seeds per "
                  f"batch) on {mb['edges']:,} edges / {mb['nodes']:,} nodes, TEDDY {a.sparsity}: "
                  f"sparsify {mb['sparsify_s']:.1f} s, {mb['batch_s']:.2f} s per batch over "
                  f"{mb['batches']} batches, loss {mb['loss_first']:.3f} -> {mb['loss_last']:.3f}, "
                  f"peak RSS above start {mb['peak_bytes'] / mib:.0f} MiB (sparsification "
                  f"included); full-batch estimate for the same model "
                  f"{mb['full_batch_estimate_bytes'] / mib:.0f} MiB."]
    table = "\n".join(lines)
    print(table)
    (out / "scale.md").write_text(table + "\n")
    (out / "scale.json").write_text(json.dumps({"rows": rows, "slopes": fits}, indent=2))
    plot(rows, out / "scale.png")
    ok = all(r["score_symmetric"] and r["transform_symmetric"] and r["exact_count"] for r in rows)
    print(f"plot: {out / 'scale.png'}; every size symmetric with the exact count: {ok}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
