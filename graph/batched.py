"""TEDDY's levels of one seed trained together: one loop over epochs, every level inside each step.

The levels of a TEDDY sweep are independent runs that share almost everything: the initial weights
θ0, the dense teacher's logits, the features, the seed (hence the dropout masks) and the epoch
count; they differ only in their edge set and their ℓ0 budget. Run one after the other
(:func:`graph.train.train_node_classifier`), each of the 20 × 200 steps pays Python and autograd
bookkeeping, its own dropout draw and its own optimizer call. Here the 2-layer GCN's forward and
backward are written out by hand (with ``exact=True``, the very operations autograd runs for
:class:`graph.models.GCN`), and per step:

* the dropout mask is drawn **once** and shared by every level: the sequential runs re-seed torch
  before each level and draw exactly one ``[N, hidden]`` mask per step, so every level sees the
  same mask sequence anyway (the batched run draws it with the same call, so the masks are equal);
* **one** fused Adam call per worker thread updates that worker's levels (Adam is elementwise,
  so one optimizer over several levels is each level's own optimizer);
* each level is projected with its own :class:`fedticket.core.l0ball.L0Ball` (its budget, its warm
  threshold), exactly as in the sequential loop.

Two paths share this loop. ``exact=True`` runs the sequential run's own operations (CSR products,
autograd's loss gradient), so every number is the level run's bit for bit; the tests hold it to
that. The default fast path changes only *how* the same quantities are summed: the four sparse
products (``X W1``, ``Â H`` and, in the backward, ``Âᵀ G`` and ``Xᵀ G``) are embedding bags
(:class:`graph.ops.BagMatrix`: 3-4x faster than PyTorch's CSR product here), the loss gradient
is written in closed form, and the output layer (ReLU, the dropout multiply, the two 7-wide
products and their backward) runs as two fused C loops (:class:`graph.ops.GCNOutLayer`) where a
C compiler is found. Where the CPU has AVX-512 the 512-wide bags are C loops too, in the bag's
own sum order (bit for bit): ``Â (X W1ᵀ)`` goes straight into the output layer's forward
(:meth:`~graph.ops.GCNOutLayer.aggregate_forward`) and ``Xᵀ (Âᵀ G)`` is one pass over ``X``'s
rows (:func:`graph.ops.transposed_chain`). Its numbers equal the exact path's to float rounding (about 1e-7
relative per product), not bit for bit; over a 200-epoch run such differences can move an
accuracy by a node or two, like a change of thread count does in the sequential loop. A batched
TEDDY sweep also trains its dense teacher through this loop (:func:`run_dense_batched`).

Levels are *interleaved*, not stacked into ``[L, N, hidden]`` tensors: measured on this 2-core CPU,
a level's ``[2708, 512]`` activations stay in cache while 20 stacked levels do not, and the stacked
element-wise passes and products ran 1.3–20× slower per level than the per-level ones.

Only GCN with the global ℓ0 scope is covered (:func:`supports`); GAT and GIN, and
``teddy.weight_scope: layer``, keep the sequential loop.

Semantics mirrored from the sequential path (graph.train / graph.methods / graph.models as of main
9ed9a6f), to reconcile if those change: θ0 rewound and ``torch.manual_seed(seed)`` before training;
CE over the training nodes + λ·KL(teacher‖student)·T² over all nodes (``distillation_loss``);
Adam(lr, weight_decay as L2, fused) over ``conv1.weight``, ``conv2.weight``; after every step the
ℓ0 projection over all parameters (GCN has no biases, so ``all`` = ``weights``) keeping
``lv.keep_of(n_ball)``, none when the level's weight sparsity is 0; dropout only on the hidden
layer (``graph.models.dropout``); ``Â = D^-1/2 (A + I) D^-1/2`` from ``normalized_adjacency``; the
validation pass of epoch t on the weights after step t's projection, in eval mode; best validation
accuracy with ties to the later epoch; the mask of that epoch returned.
"""

from __future__ import annotations

import time
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fedticket.core.l0ball import FlatParameters, L0Ball, ramp_keep
from graph.features import SparseFeatures
from graph.levels import LevelRow
from graph.models import GCN, dropout, normalized_adjacency
from graph.ops import (
    BagMatrix,
    FixedAdjacency,
    FusedAdam,
    GCNOutLayer,
    Split,
    gcn_out_kernels,
    transposed_chain,
)
from graph.train import TrainResult, accuracy, distillation_loss


def supports(cfg) -> bool:
    """Whether a sweep's TEDDY levels can go through :func:`run_teddy_batched`."""
    return cfg.model.name == "gcn" and cfg.teddy.weight_scope == "global"


class _Level:
    """One level's parameters, adjacency, ℓ0 ball and best-validation record."""

    def __init__(self, init_state: dict, edge_index: Tensor, keep: int | None, n: int, dtype,
                 w1_transposed: bool, exact: bool = True, ramp: int = 0):
        # with CSR features ``W1`` is held as ``[in, out]``: ``X @ W1ᵀ`` and its gradient
        # ``Xᵀ G`` then need no transposed copy of W1 (2.9 MB on Cora) in either direction
        w1 = init_state["conv1.weight"].detach()
        self.t1 = w1_transposed
        self.w1 = nn.Parameter(w1.t().contiguous() if w1_transposed else w1.clone())
        self.w2 = nn.Parameter(init_state["conv2.weight"].detach().clone())
        self.adj = FixedAdjacency(*normalized_adjacency(edge_index, None, n, dtype), n, dtype)
        if not exact:
            self.adj.a, self.adj.at = BagMatrix(self.adj.a), BagMatrix(self.adj.at)
        self.flat = self.ball = None
        if keep is not None:
            self.flat = FlatParameters({"conv1.weight": self.w1, "conv2.weight": self.w2})
            self.ball = L0Ball(self.flat, keep) if keep < self.flat.numel else None
        self.keep = keep
        # teddy.ramp_epochs (graph.train's l0_ramp): the budget of step t, and the first step
        # whose validation pass counts for the best epoch
        self.ramp = int(ramp) if self.ball is not None else 0
        self.first_counted = max(0, self.ramp - 1)
        self.last_ev: Tensor | None = None
        self.best_val = -1.0
        self.best: tuple | None = None
        self.pending: tuple | None = None  # (epoch, keep) whose validation pass comes next step

    def project(self, epoch: int):
        if self.ball is None:
            return None
        if self.ramp:
            self.ball.keep = ramp_keep(self.flat.numel, self.keep, epoch, self.ramp)
        return self.ball.project()

    def record(self, epoch: int, ev: Tensor, keep, data) -> None:
        self.last_ev = ev
        if epoch < self.first_counted:  # still ramping: not yet the level's sparsity
            return
        val = accuracy(ev, data.y, data.val_mask)
        if val >= self.best_val:  # ties: the later epoch, as in the TEDDY/UGS code
            self.best_val = val
            self.best = (val, accuracy(ev, data.y, data.test_mask), epoch, ev, keep)

    def result(self, seconds: float) -> TrainResult:
        assert self.best is not None, "epochs must be >= 1"
        val, test, epoch, ev, keep = self.best
        mask = None
        if keep is not None:
            mask = self.flat.to_mask(keep)
        elif self.flat is not None:  # keep >= everything: nothing was ever pruned
            mask = self.flat.to_mask(torch.ones(self.flat.numel, dtype=torch.bool))
        if mask is not None and self.t1:
            mask["conv1.weight"] = mask["conv1.weight"].t().contiguous()
        return TrainResult(val_accuracy=val, test_accuracy=test, best_epoch=epoch, logits=ev,
                           mask=mask, seconds=seconds, last_logits=self.last_ev)


def train_gcn_levels(model: GCN, init_state: dict, x, data, edge_indices: list[Tensor],
                     keeps: list[int | None], *, seed: int, epochs: int = 200, lr: float = 0.01,
                     weight_decay: float = 5e-4, teacher_logits: Tensor | None = None,
                     kd_lambda: float = 0.0, temperature: float = 1.0, progress: bool = False,
                     desc: str = "levels", exact: bool = False, ramp: int = 0,
                     step_masks: "StepMasks | None" = None) -> list[TrainResult]:
    """Train one GCN per ``(edge_indices[i], keeps[i])`` from ``init_state``, all in one loop.

    ``exact``: the sequential run's own operations, bit for bit (tests); False (the default):
    embedding-bag products and the closed-form loss gradient, equal to float rounding.
    ``ramp``: ``train_node_classifier``'s ``l0_ramp`` (the sparsity ramp), for every level.
    ``step_masks``: shared between calls of one seed (:class:`StepMasks`): the first call keeps
    its steps' packed dropout masks there, a later call with the same seed, shape, ``p`` and
    epochs reads them back instead of drawing them again (they are the very same draws).

    Result ``i`` is (with ``exact``, bit for bit) what ``train_node_classifier`` returns for that
    level run alone after
    ``model.load_state_dict(init_state); torch.manual_seed(seed)`` with ``l0_keep=keeps[i]``
    (None: no projection). ``model`` only supplies the architecture (its weights are not touched).
    """
    if not isinstance(model, GCN):
        raise TypeError(f"batched levels cover the GCN only, got {type(model).__name__}")
    if len(edge_indices) != len(keeps):
        raise ValueError(f"{len(edge_indices)} edge sets but {len(keeps)} ℓ0 budgets")
    if epochs < 1:
        raise ValueError("epochs must be >= 1")
    if ramp > epochs:
        raise ValueError(f"ramp ({ramp}) must be at most epochs ({epochs})")
    n = x.shape[0]
    dtype = init_state["conv1.weight"].dtype
    t0 = time.perf_counter()
    sparse = isinstance(x, SparseFeatures)
    if sparse:
        xc, xt = x.csr(), x.csr_t()
        if not exact:
            xc, xt = BagMatrix(xc), BagMatrix(xt)

        def first(w1t: Tensor, split: Split | None = None) -> Tensor:
            return xc @ w1t if exact else xc.mm(w1t, split)

        def first_grad(dz1: Tensor) -> Tensor:
            return xt @ dz1

        def first_grad_through(at, dp1: Tensor, split: Split | None = None) -> Tensor:
            # Xᵀ (Âᵀ dp1): one pass over X's rows with the bag kernels (graph.ops)
            return first_grad(at @ dp1) if exact else transposed_chain(xc, xt, at, dp1, split)
    else:
        def first(w1: Tensor, split: Split | None = None) -> Tensor:
            return F.linear(x, w1)

        def first_grad(dz1: Tensor) -> Tensor:
            # fused Adam reads a gradient in its parameter's layout (autograd's
            # AccumulateGrad makes that copy in the sequential run)
            return dz1.t().mm(x).contiguous()

        def first_grad_through(at, dp1: Tensor, split: Split | None = None) -> Tensor:
            return first_grad(at @ dp1)
    y, train_mask = data.y, data.train_mask
    y_train = y[train_mask]
    use_kd = teacher_logits is not None and kd_lambda > 0
    teacher = teacher_logits.detach() if use_kd else None
    p = float(model.dropout)
    t_kd = float(temperature)
    train_idx = train_mask.nonzero().reshape(-1)
    onehot = F.one_hot(y_train, int(init_state["conv2.weight"].shape[0])).to(dtype)
    p_teacher = F.softmax(teacher / t_kd, dim=-1) if use_kd else None

    def loss_grad(logits: Tensor) -> Tensor:
        """d(CE over the training nodes + λ·KL(teacher ‖ student)·T²)/d logits, in closed form:
        ``(softmax - onehot) / n_train`` on the training rows plus ``λ·T·(softmax(z/T) - p_t) / N``
        (the gradients autograd takes, to float rounding, at a fraction of its small-op cost)."""
        if use_kd:
            s = F.softmax(logits / t_kd if t_kd != 1.0 else logits, dim=-1)
            g = (s - p_teacher).mul_(kd_lambda * t_kd / logits.shape[0])
            s_train = s[train_idx] if t_kd == 1.0 else F.softmax(logits[train_idx], dim=-1)
        else:
            g = torch.zeros_like(logits)
            s_train = F.softmax(logits[train_idx], dim=-1)
        return g.index_add_(0, train_idx, (s_train - onehot).div_(train_idx.numel()))

    def autograd_loss_grad(logits: Tensor) -> Tensor:
        logits = logits.requires_grad_()
        with torch.enable_grad():
            loss = F.cross_entropy(logits[train_mask], y_train)
            if use_kd:
                loss = loss + kd_lambda * distillation_loss(logits, teacher, temperature)
            (g,) = torch.autograd.grad(loss, logits)
        return g.contiguous()

    grad_of = autograd_loss_grad if exact else loss_grad
    ones = torch.ones(n, init_state["conv2.weight"].shape[1], dtype=dtype)
    torch.manual_seed(seed)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=epochs, desc=desc, unit="ep", leave=False)
    # the fast path's output layer as two fused C loops (graph.ops.GCNOutLayer) when they build
    kernels = None if exact else gcn_out_kernels()
    out_layer = GCNOutLayer(kernels) if kernels is not None and GCNOutLayer.usable(
        ones, init_state["conv2.weight"]) else None

    def step(group: list[_Level], mask: tuple) -> None:
        """Forward, the previous step's validation pass and backward of each level in ``group``."""
        m, bits = mask
        fused = out_layer is not None and (m is None or bits is not None)
        for lv in group:
            a, at, w1, w2 = lv.adj.a, lv.adj.at, lv.w1.detach(), lv.w2.detach()
            if fused:
                z, ev, out = out_layer.aggregate_forward(a, first(w1, split), bits, w2, split)
                if lv.pending is not None:  # eval pass of the previous step's weights
                    lv.record(lv.pending[0], a @ ev, lv.pending[1], data)
                lv.w2.grad, dp1 = out_layer.backward(at @ grad_of(a @ out), w2, z, bits, split)
                lv.w1.grad = first_grad_through(at, dp1, split)
                continue
            h = torch.relu(a @ first(w1))
            if lv.pending is not None:  # eval pass of the previous step's weights
                lv.record(lv.pending[0], a @ F.linear(h, w2), lv.pending[1], data)
            hd = h if m is None else h * m
            dz2 = at @ grad_of(a @ F.linear(hd, w2))
            lv.w2.grad = dz2.t().mm(hd)
            dh = dz2.mm(w2)
            if m is not None:
                dh = dh * m
            dp1 = torch.ops.aten.threshold_backward(dh, h, 0)
            lv.w1.grad = first_grad_through(at, dp1)

    def step_update_project(i: int, mask: tuple, epoch: int) -> None:
        step(groups[i], mask)
        optimizers[i].step()
        for lv in groups[i]:
            lv.pending = (epoch, lv.project(epoch))

    def final_eval(i: int) -> None:
        with torch.no_grad():
            for lv in groups[i]:
                a = lv.adj.a
                h = torch.relu(a @ first(lv.w1.detach()))
                lv.record(lv.pending[0], a @ F.linear(h, lv.w2.detach()), lv.pending[1], data)

    # torch_threads > 1: levels are split over that many worker threads, each op on one thread
    # (a level's ops are too small for intra-op threads to pay; whole levels in parallel do).
    # Every level is still computed by the same single-threaded ops, so the numbers do not move.
    threads = torch.get_num_threads()
    workers = max(1, min(threads, len(edge_indices)))
    order = [list(range(len(edge_indices)))[i::workers] for i in range(workers)]
    levels: list[_Level] = [None] * len(edge_indices)  # type: ignore[list-item]
    groups: list[list[_Level]] = [[] for _ in range(workers)]
    optimizers: list[FusedAdam] = [None] * workers  # type: ignore[list-item]

    def build(i: int) -> None:
        """Worker ``i``'s levels (their adjacency, flat parameters, Adam state), built in that
        worker, so the 20 levels' set-up (about half a second of one core) runs in parallel."""
        for j in order[i]:
            levels[j] = _Level(init_state, edge_indices[j], keeps[j], n, dtype, sparse, exact, ramp)
            groups[i].append(levels[j])
        # one fused Adam per worker's group, stepped inside the worker: Adam is elementwise, so a
        # group's optimizer is each of its levels' own optimizer, and the update runs in parallel
        # (graph.ops.FusedAdam: torch's fused Adam kernel without Optimizer.step's dynamo calls)
        optimizers[i] = FusedAdam([w for lv in groups[i] for w in (lv.w1, lv.w2)], lr=lr,
                                  weight_decay=weight_decay)
    pool = None
    if workers > 1:
        from concurrent.futures import ThreadPoolExecutor

        pool = ThreadPoolExecutor(workers, thread_name_prefix="level")
    split = None
    if workers == 1 and threads > 1 and out_layer is not None:
        # one level (the dense teacher): its kernels' rows or columns over the threads instead
        # (graph.ops.Split: the same numbers), so the other core does not idle for 200 steps
        from concurrent.futures import ThreadPoolExecutor

        split = Split(ThreadPoolExecutor(threads, thread_name_prefix="part"), threads)
    if threads > 1:
        # single-threaded ops even for one level (the teacher): a multi-threaded GEMM may sum in
        # another order, and the numbers must not depend on torch_threads
        torch.set_num_threads(1)

    def each(fn, *args) -> None:
        if pool is None:
            fn(0, *args)
        else:  # list(): re-raises a worker's error
            list(pool.map(fn, range(workers), *([a] * workers for a in args)))

    key = (seed, tuple(ones.shape), ones.dtype, p, epochs)
    reuse = (step_masks.replay(key) if step_masks is not None and out_layer is not None and p > 0
             else None)
    keep = (step_masks.recorder(key) if step_masks is not None and reuse is None
            and out_layer is not None and p > 0 else None)

    def draw() -> tuple:
        if reuse is not None:  # this seed's masks, drawn and packed by an earlier call
            return _PACKED_ONLY, next(reuse)
        # the one draw every sequential level run makes at this step (same call, same shape)
        m = dropout(ones, p, True) if p > 0 else None
        # the fused output layer reads the mask as bits, packed once for every level
        bits = out_layer.pack(m) if out_layer is not None and m is not None else None
        if keep is not None:
            keep(bits)
        return m, bits

    def tick() -> None:
        if bar is not None:
            bar.update(1)
            bar.set_postfix(best_val=f"{max(lv.best_val for lv in groups[0]):.3f}")

    # torch_threads > 1: the masks are drawn on a thread of their own, ahead of the workers (a
    # draw is ~5 ms of one core), and each worker runs all its epochs without waiting for the
    # other at every step (the levels are independent; only the mask of step t is shared). The
    # draws stay one at a time and in step order, and nothing else uses the generator, so every
    # step gets the very mask it got before.
    stream = _MaskStream(draw, epochs, workers) if threads > 1 else None

    def run_epochs(i: int) -> None:
        for epoch in range(epochs):
            step_update_project(i, stream.get(epoch), epoch)
            stream.finished(i, epoch)
            if i == 0:
                tick()

    try:
        each(build)
        if stream is None:
            for epoch in range(epochs):
                each(step_update_project, draw(), epoch)
                tick()
        else:
            with stream:
                each(stream.guard(run_epochs))
        each(final_eval)
    finally:
        if pool is not None:
            pool.shutdown()
        if split is not None:
            split.pool.shutdown()
        torch.set_num_threads(threads)
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - t0
    return [lv.result(seconds) for lv in levels]


# stands in for the float mask where only its packed bits are read (the fused path's ``m is None``
# test); any other use fails loudly instead of reading a wrong mask
_PACKED_ONLY = object()


class StepMasks:
    """One seed's per-step packed dropout masks, shared by the teacher's and the students' runs.

    Every run of a seed re-seeds torch's generator and makes the same ``dropout`` draw at every
    step, so the students' batch would draw exactly the masks the dense teacher drew (200 draws
    of ~5 ms each on the workers' cores). The teacher's run records the packed bits (173 kB a step
    on Cora); a later run with the same key (seed, shape, dtype, p, epochs) replays them. A mask
    that did not pack (not a plain dropout mask) disables the replay for that key.
    """

    def __init__(self):
        self.key, self.bits, self.complete = None, [], False

    def recorder(self, key):
        self.key, self.bits, self.complete = key, [], False

        def keep(bits) -> None:
            if bits is None:  # not packable: the torch ops need the float mask, never replay
                self.key = None
                return
            if self.key == key:
                self.bits.append(bits)
                self.complete = len(self.bits) == key[-1]
        return keep

    def replay(self, key):
        """An iterator over the recorded bits, or None when they are not this key's, whole."""
        if self.key != key or not self.complete:
            return None
        return iter(self.bits)


class _MaskStream:
    """Step ``t``'s dropout mask for every worker: drawn by ``draw`` on a thread of its own, in
    step order, at most ``ahead`` steps before the slowest worker (so at most that many masks are
    held), and dropped once every worker is past it."""

    def __init__(self, draw, epochs: int, workers: int, ahead: int = 2):
        import threading

        self.draw, self.epochs, self.ahead = draw, epochs, ahead
        self.cond = threading.Condition()
        self.done = [0] * workers  # steps each worker has finished
        self.masks: dict[int, tuple] = {}
        self.failed: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="dropout", daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        with self.cond:
            if self.failed is None and exc[0] is not None:
                self.failed = exc[1]
            self.cond.notify_all()
        self.thread.join()
        if self.failed is not None and exc[0] is None:
            raise self.failed

    def _run(self) -> None:
        try:
            for t in range(self.epochs):
                with self.cond:
                    self.cond.wait_for(lambda t=t: self.failed is not None
                                       or t < min(self.done) + self.ahead)
                    if self.failed is not None:
                        return
                mask = self.draw()
                with self.cond:
                    self.masks[t] = mask
                    self.cond.notify_all()
        except BaseException as e:  # noqa: BLE001 - handed to the workers, re-raised at exit
            with self.cond:
                self.failed = e
                self.cond.notify_all()

    def get(self, t: int) -> tuple:
        with self.cond:
            self.cond.wait_for(lambda: self.failed is not None or t in self.masks)
            if self.failed is not None:  # another worker's (or the drawer's) error, as it was
                raise self.failed
            return self.masks[t]

    def finished(self, worker: int, t: int) -> None:
        with self.cond:
            self.done[worker] = t + 1
            for old in [k for k in self.masks if k < min(self.done)]:
                del self.masks[old]
            self.cond.notify_all()

    def guard(self, fn):
        """``fn(i)`` that, when it raises, stops the drawer and the other workers."""
        def run(i: int) -> None:
            try:
                fn(i)
            except BaseException as e:
                with self.cond:
                    if self.failed is None:
                        self.failed = e
                    self.cond.notify_all()
                raise
        return run


def run_dense_batched(ctx) -> Iterator[LevelRow]:
    """``graph.methods.run_dense`` through :func:`train_gcn_levels` (one level, no projection):
    the teacher of a batched TEDDY sweep gets the same fast products as its students."""
    cfg = ctx.cfg
    (res,) = train_gcn_levels(ctx.model, ctx.init_state, ctx.x, ctx.data, [ctx.data.edge_index],
                              [None], seed=ctx.seed, epochs=cfg.train.epochs, lr=cfg.train.lr,
                              weight_decay=cfg.train.weight_decay, progress=ctx.progress,
                              desc=f"dense seed {ctx.seed}", step_masks=ctx.step_masks)
    ctx.teacher = res
    if ("dense", 0) not in ctx.done:
        yield LevelRow("dense", 0, 0.0, 0.0, res.val_accuracy, res.test_accuracy, res.seconds,
                       ctx.seed, res.seconds, ctx.dense.edges_kept, ctx.dense.weights_kept,
                       res.best_epoch)


def run_teddy_batched(ctx) -> Iterator[LevelRow]:
    """``graph.methods.run_teddy`` with every level of the seed in one :func:`train_gcn_levels`.

    Rows are those of the sequential method; ``seconds`` is the batch's wall time divided by the
    number of levels (their share), ``cumulative_seconds`` the teacher + edge scores + the whole
    batch (getting any one level needs all of it).
    """
    from fedticket.core import prunable_parameters
    from graph.methods import _weights_kept, student_lr, teacher_logits
    from graph.transforms import teddy_ranking

    cfg, edge_index = ctx.cfg, ctx.data.edge_index
    todo = ctx.todo("teddy")
    if not todo:
        return
    t0 = time.perf_counter()
    ranking = teddy_ranking(ctx.upairs)
    score_seconds = time.perf_counter() - t0
    n_ball = sum(p.numel() for name, p in ctx.model.named_parameters()
                 if cfg.teddy.project == "all" or name in prunable_parameters(ctx.model))
    eis = [edge_index[:, ranking.keep_top(lv.edges_kept)] for lv in todo]  # the level's count
    keeps = [lv.keep_of(n_ball) if lv.weight_sparsity > 0 else None for lv in todo]
    t1 = time.perf_counter()
    results = train_gcn_levels(ctx.model, ctx.init_state, ctx.x, ctx.data, eis, keeps,
                               seed=ctx.seed, epochs=cfg.train.epochs, lr=student_lr(cfg),
                               weight_decay=cfg.train.weight_decay,
                               teacher_logits=teacher_logits(ctx), kd_lambda=cfg.teddy.kd_lambda,
                               temperature=cfg.teddy.temperature, ramp=cfg.teddy.ramp_epochs,
                               progress=ctx.progress, step_masks=ctx.step_masks,
                               desc=f"teddy {len(todo)} levels seed {ctx.seed}")
    batch = time.perf_counter() - t1
    for lv, ei, res in zip(todo, eis, results):
        f = ctx.save_level("teddy", lv.level, res.mask, ei)
        extra = {"mask_layers": res.mask.layer_stats()} if res.mask is not None else {}
        yield LevelRow("teddy", lv.level, lv.graph_sparsity, lv.weight_sparsity, res.val_accuracy,
                       res.test_accuracy, batch / len(todo), ctx.seed,
                       ctx.teacher.seconds + score_seconds + batch,
                       lv.edges_kept, _weights_kept(res.mask, lv, ctx.model),
                       res.best_epoch, f, extra)


__all__ = ["StepMasks", "run_dense_batched", "run_teddy_batched", "supports", "train_gcn_levels"]
