"""The method registry of a sweep: ``dense``, ``teddy``, ``ugs``, ``random``.

A method is one function ``run(ctx) -> Iterator[LevelRow]`` registered under its name; it gets
a :class:`SeedContext` (the data, the model with its initial weights θ0, the levels to run and
those already done) and yields one row per level it runs. Adding a method is a function plus a
``@register`` line (and its name in ``graph.config.METHODS``).

Every method trains through :meth:`SeedContext.train`, which rewinds the model to θ0 and
re-seeds torch before each run, as the TEDDY code does (``setup_seed(seed)`` before building
the model at every level): a level's number does not depend on which other levels ran before it.
With ``rng: official`` it restores the generator state the TEDDY code has right after its init
draws instead (``graph.streams``), the same at every level.
"""

from __future__ import annotations

import hashlib
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch import Tensor
from torch_geometric.data import Data

from fedticket.core import Mask, mask_from_scores, prunable_parameters
from graph.batched import StepMasks
from graph.edges import UndirectedPairs
from graph.levels import Level, LevelRow
from graph.train import TrainResult, train_node_classifier
from graph.transforms import random_ranking, teddy_ranking
from graph.ugs import UGS, edge_index_for, load_state, save_state

REGISTRY: dict[str, Callable[["SeedContext"], Iterator[LevelRow]]] = {}


def register(name: str):
    def deco(fn):
        REGISTRY[name] = fn
        return fn
    return deco


@dataclass
class SeedContext:
    cfg: object  # GraphConfig
    data: Data
    x: object  # features (dense or graph.features.SparseFeatures)
    seed: int
    model: torch.nn.Module
    init_state: dict
    upairs: UndirectedPairs
    levels: list[Level]  # the selected levels, ascending
    all_levels: list[Level]  # 1..K (UGS prunes round by round through all of them)
    dense: Level
    done: set = field(default_factory=set)  # (method, level) already in the results folder
    mask_dir: Path | None = None
    # where UGS keeps its round state (``ugs_state/`` of the results folder; None: nowhere)
    state_dir: Path | None = None
    progress: bool = False
    teacher: TrainResult | None = None  # the dense run (TEDDY's teacher), set by ``dense``
    # rng: official: the generator state right after the TEDDY code's init draws, where its
    # training starts (graph/streams.py); None: torch.manual_seed(seed) before every run
    train_rng: Tensor | None = None
    # the batched runs' dropout masks of this seed (graph.batched.StepMasks): the teacher draws
    # them, the TEDDY students' batch replays them
    step_masks: StepMasks = field(default_factory=StepMasks)

    def todo(self, method: str) -> list[Level]:
        return [lv for lv in self.levels if (method, lv.level) not in self.done]

    def train(self, edge_index: Tensor, desc: str, *, lr: float | None = None, **kw) -> TrainResult:
        """``lr``: this run's learning rate (None: ``train.lr``)."""
        cfg = self.cfg
        self.model.load_state_dict(self.init_state)
        if self.train_rng is not None:
            torch.set_rng_state(self.train_rng)
        else:
            torch.manual_seed(self.seed)
        return train_node_classifier(self.model, self.x, self.data, edge_index,
                                     epochs=cfg.train.epochs, lr=cfg.train.lr if lr is None else lr,
                                     weight_decay=cfg.train.weight_decay,
                                     progress=self.progress, desc=f"{desc} seed {self.seed}", **kw)

    def save_level(self, method: str, level: int, mask: Mask | None, edge_index: Tensor) -> str:
        if self.mask_dir is None:
            return ""
        from fedticket.core import tensorfile
        from fedticket.results import atomic_write_bytes

        stem = f"{method}_seed{self.seed}_level{level:02d}"
        name = ""
        if mask is not None:
            mask.save(self.mask_dir / f"{stem}.weights.safetensors")
            name = f"masks/{stem}.weights.safetensors"
        # checksummed like the weight mask beside it (core.tensorfile)
        atomic_write_bytes(self.mask_dir / f"{stem}.edges.safetensors",
                           tensorfile.dumps({"edge_index": edge_index},
                                            {"format": "fedticket.edges/2"}))
        return name


def _weights_kept(mask: Mask | None, lv: Level, model) -> int:
    """Kept prunable weights (ndim >= 2), whatever else the mask covers (TEDDY: biases, ε)."""
    if mask is None:
        return lv.num_weights
    names = prunable_parameters(model)
    return int(sum(int(torch.count_nonzero(mask[n])) for n in names if n in mask))


def teacher_logits(ctx: SeedContext) -> Tensor:
    """The dense run's logits TEDDY distills from: its best-validation epoch's (``teddy.teacher:
    best``, the TEDDY code's) or its last epoch's (``last``)."""
    res = ctx.teacher
    if ctx.cfg.teddy.teacher == "last":
        return res.last_logits
    return res.logits


def student_lr(cfg) -> float:
    """The TEDDY students' learning rate: ``teddy.student_lr``, else ``train.lr`` (the TEDDY code
    trains the teacher and its students with one lr)."""
    return cfg.train.lr if cfg.teddy.student_lr is None else cfg.teddy.student_lr


@register("dense")
def run_dense(ctx: SeedContext) -> Iterator[LevelRow]:
    """The dense model: the reference point and TEDDY's teacher (its best-validation logits)."""
    res = ctx.train(ctx.data.edge_index, "dense")
    ctx.teacher = res
    if ("dense", 0) not in ctx.done:
        yield LevelRow("dense", 0, 0.0, 0.0, res.val_accuracy, res.test_accuracy, res.seconds,
                       ctx.seed, res.seconds, ctx.dense.edges_kept, ctx.dense.weights_kept,
                       res.best_epoch)


@register("teddy")
def run_teddy(ctx: SeedContext) -> Iterator[LevelRow]:
    """TEDDY: degree-based edges (one ranking, nested levels) + distillation + ℓ0-ball PGD."""
    cfg, edge_index = ctx.cfg, ctx.data.edge_index
    t0 = time.perf_counter()
    ranking = teddy_ranking(ctx.upairs)  # computed once per graph: O(|E|) + one sort
    score_seconds = time.perf_counter() - t0
    n_ball = sum(p.numel() for n, p in ctx.model.named_parameters()
                 if cfg.teddy.project == "all" or n in prunable_parameters(ctx.model))
    for lv in ctx.todo("teddy"):
        t1 = time.perf_counter()
        ei = edge_index[:, ranking.keep_top(lv.edges_kept)]  # the level's count, computed once
        res = ctx.train(ei, f"teddy L{lv.level}", teacher_logits=teacher_logits(ctx),
                        kd_lambda=cfg.teddy.kd_lambda, temperature=cfg.teddy.temperature,
                        lr=student_lr(cfg),
                        l0_keep=lv.keep_of(n_ball) if lv.weight_sparsity > 0 else None,
                        l0_params=cfg.teddy.project, l0_scope=cfg.teddy.weight_scope,
                        l0_ramp=cfg.teddy.ramp_epochs)
        secs = time.perf_counter() - t1
        f = ctx.save_level("teddy", lv.level, res.mask, ei)
        extra = {"mask_layers": res.mask.layer_stats()} if res.mask is not None else {}
        yield LevelRow("teddy", lv.level, lv.graph_sparsity, lv.weight_sparsity, res.val_accuracy,
                       res.test_accuracy, secs, ctx.seed,
                       ctx.teacher.seconds + score_seconds + secs, lv.edges_kept,
                       _weights_kept(res.mask, lv, ctx.model), res.best_epoch, f, extra)


@register("random")
def run_random(ctx: SeedContext) -> Iterator[LevelRow]:
    """Random edges (nested, seeded) and a random fixed weight mask at the level's counts."""
    ranking = random_ranking(ctx.upairs, ctx.seed)
    gen = torch.Generator().manual_seed(ctx.seed)
    params = prunable_parameters(ctx.model)
    scores = {k: torch.rand(p.shape, generator=gen) for k, p in params.items()}
    for lv in ctx.todo("random"):
        t1 = time.perf_counter()
        ei = ctx.data.edge_index[:, ranking.keep_top(lv.edges_kept)]
        mask = mask_from_scores(scores, lv.weight_density) if lv.weight_sparsity > 0 else None
        res = ctx.train(ei, f"random L{lv.level}", fixed_mask=mask)
        secs = time.perf_counter() - t1
        f = ctx.save_level("random", lv.level, mask, ei)
        yield LevelRow("random", lv.level, lv.graph_sparsity, lv.weight_sparsity, res.val_accuracy,
                       res.test_accuracy, secs, ctx.seed, secs, lv.edges_kept,
                       _weights_kept(mask, lv, ctx.model), res.best_epoch, f)


def ugs_fingerprint(ctx: SeedContext) -> str:
    """What a UGS round state was computed from: the config's result keys, the seed, the graph
    and θ0 (a state from anywhere else is never continued)."""
    from fedticket.config import fingerprint

    h = hashlib.sha256(f"{fingerprint(ctx.cfg)} seed {ctx.seed} nodes {ctx.data.num_nodes}".encode())
    for t in (ctx.data.edge_index, *(ctx.init_state[k] for k in sorted(ctx.init_state))):
        t = t.detach().cpu().contiguous()
        h.update(f"{t.dtype} {tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:32]


@register("ugs")
def run_ugs(ctx: SeedContext) -> Iterator[LevelRow]:
    """UGS: k rounds of mask learning + pruning to reach level k, then a rewound retraining.

    With ``ctx.state_dir`` the round state is saved after every round and a rerun continues
    after the last saved round (``graph.ugs``: bit for bit the numbers of an uninterrupted run);
    a state file that cannot be used is reported in one line and the rounds are recomputed.
    """
    cfg = ctx.cfg
    todo = {lv.level: lv for lv in ctx.todo("ugs")}
    if not todo:
        return
    ugs = UGS(ctx.model, ctx.init_state, ctx.x, ctx.data, ctx.data.edge_index, ctx.upairs,
              levels=ctx.all_levels, mask_epochs=cfg.ugs.mask_epochs, lr=cfg.train.lr,
              weight_decay=cfg.train.weight_decay, edge_l1=cfg.ugs.edge_l1,
              weight_l1=cfg.ugs.weight_l1, noise=cfg.ugs.mask_init_noise, seed=ctx.seed,
              progress=ctx.progress)
    state = fp = None
    if ctx.state_dir is not None:
        state, fp = ctx.state_dir / f"seed{ctx.seed}.safetensors", ugs_fingerprint(ctx)
        if state.is_file():
            try:
                load_state(state, ugs, fp, ctx.seed)
            except (OSError, ValueError) as e:
                # the state only saves time (rounds are deterministic), so recompute, not refuse
                print(f"fedticket: ignoring UGS round state ({e}); recomputing from round 1",
                      file=sys.stderr)
    for r in range(1, max(todo) + 1):
        if r <= ugs.rounds_done:
            if r not in todo:
                continue
            rnd = ugs.at_round(r)
        else:
            rnd = ugs.run_round(r)
            if state is not None:
                save_state(state, ugs, fp, ctx.seed)
            if r not in todo:
                continue
        spent = sum(ugs.round_seconds[:r])  # every round to here, those of earlier runs too
        lv = todo[r]
        t1 = time.perf_counter()
        ei, _ = edge_index_for(ctx.upairs, ctx.data.edge_index, rnd.pair_keep)
        res = ctx.train(ei, f"ugs L{r} retrain", fixed_mask=rnd.weight_mask)
        secs = time.perf_counter() - t1
        f = ctx.save_level("ugs", r, rnd.weight_mask, ei)
        yield LevelRow("ugs", r, lv.graph_sparsity, lv.weight_sparsity, res.val_accuracy,
                       res.test_accuracy, rnd.seconds + secs, ctx.seed, spent + secs,
                       int(rnd.pair_keep.sum()), rnd.weight_mask.num_kept, res.best_epoch, f)
