"""Why HideNseek stalls on conv4 / pathological (issue 10): probe one setting round by round.

Runs the method units directly (no Flower, the same learners and aggregation as a run) for R
rounds of 10 clients (partitions 0-9, 10-19, ...) and prints per-layer SynFlow density, the
frozen network's activation scale, and per round: train loss, score magnitude and step, the
fraction of signs a client flips, the fraction of global signs the aggregation flips, vote ties,
and the global accuracy on 1 000 test images.

    R=2 OMP_NUM_THREADS=1 python simulations/fl_sign_diagnose.py                # hidenseek
    R=3 OMP_NUM_THREADS=1 python simulations/fl_sign_diagnose.py method=signscore
"""
import os
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fedticket.fl import wire  # noqa: E402
from fedticket.fl.config import load_fl_config  # noqa: E402
from fedticket.fl.dataset import client_tensors, test_tensors  # noqa: E402
from fedticket.fl.methods import make_method  # noqa: E402
from fedticket.fl.model import build_ticket, evaluate  # noqa: E402

torch.set_num_threads(1)
root = os.environ.get("FEDTICKET_DATA", str(REPO.parent / "shared" / "data"))
over = ["model.name=conv4", "data.partition=pathological", "data.classes_per_client=2",
        "train.local_epochs=3", "train.batch_size=128", "data.test_subset=1000"] + sys.argv[1:]
cfg = load_fl_config(REPO / "configs/fl/bench_hidenseek.yaml", over)
t = build_ticket(cfg)
print("per-layer density:", {n: round(float(m.float().mean()), 4) for n, m in t.mask.items()})
xt, yt = test_tensors(cfg, root)
meth = make_method(cfg, t)
g = meth.initial_global()
m0 = meth.eval_model(g, 0)
acts = {}
hooks = [mod.register_forward_hook(lambda mm, i, o, n=n: acts.__setitem__(n, o.detach()))
         for n, mod in m0.named_modules() if isinstance(mod, (torch.nn.Conv2d, torch.nn.Linear))]
with torch.no_grad():
    out = m0(xt[:500])
for n, a in acts.items():
    print(f"  {n}: std {a.std():.3g}  frac>0 {(a>0).float().mean():.3f}")
print("logits std over batch per class (mean):", float(out.std(0).mean()), "pred classes:",
      torch.bincount(out.argmax(1), minlength=10).tolist())
print("round0 acc", evaluate(m0, xt, yt)[0])
# R rounds of 10 clients each: sign flips (client and global), vote ties
R = int(os.environ.get("R", 3))
C = 10
for r in range(1, R + 1):
    ups, ws, flips = [], [], []
    prev = wire.decode_bits_array(g, t.kept)
    for pid in range((r - 1) * C, r * C):
        x, y, _, _ = client_tensors(cfg, root, pid)
        L = meth.learner(pid)
        L.load_global(g)
        s0 = L.net.score_vector().clone()
        loss, steps = L.train(x, y, r)
        s1 = L.net.score_vector()
        u = meth.decode_update(L.update(r))
        ups.append(u)
        ws.append(len(y))
        fl = float(((s0 >= 0) != (s1 >= 0)).float().mean())
        flips.append(fl)
        if pid == (r - 1) * C:
            print(f"  client {pid}: classes {sorted(set(y.tolist()))}, n={len(y)} loss {loss:.3f} steps {steps} "
                  f"|s0| mean {s0.abs().mean():.2e}  |ds| mean {(s1-s0).abs().mean():.2e}  flip frac {fl:.4f} "
                  f"local acc {evaluate(L.eval_model(), x, y)[0]:.3f}")
    g_new = meth.aggregate(r, ups, ws, g)
    newb = wire.decode_bits_array(g_new, t.kept)
    tally = sum((u.float() * 2 - 1) * w for u, w in zip(ups, ws))
    print(f"round {r}: mean client flip frac {sum(flips)/C:.4f}; global flip frac {(newb != prev).float().mean():.4f}; "
          f"ties {(tally == 0).float().mean():.4f}; frac global +1 {newb.float().mean():.4f}")
    g = g_new
    m = meth.eval_model(g, r)
    with torch.no_grad():
        o = m(xt[:500])
    print(f"round {r}: acc {evaluate(m, xt, yt)[0]:.4f}, pred hist {torch.bincount(o.argmax(1), minlength=10).tolist()}")
