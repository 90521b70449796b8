"""One seed of a graph lottery-ticket sweep: dense teacher, then TEDDY / UGS / random per level.

Every method starts from the same initialisation θ0 (the model built right after
``torch.manual_seed(seed)``) and sees the same training nodes, so differences come from what each
method keeps, not from luck of the draw. Dropout streams are re-seeded before every training run,
so a level's number does not depend on which other levels or methods ran before it.

Rows carry both ``seconds`` (this level's own work) and ``cumulative_seconds`` (wall time to get
this level from nothing: for TEDDY the dense teacher + edge scores + this level's run; for UGS all
rounds up to this level + the retraining; for random just the run).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor
from torch_geometric.data import Data

from fedticket.core import Mask, mask_from_scores, prunable_parameters
from graph.config import GraphConfig
from graph.edges import undirected_pairs
from graph.models import build_model
from graph.train import TrainResult, train_node_classifier
from graph.transforms import random_ranking, teddy_ranking
from graph.ugs import UGS, edge_index_for


@dataclass
class LevelRow:
    method: str
    level: int
    graph_sparsity: float
    weight_sparsity: float
    val_accuracy: float
    test_accuracy: float
    seconds: float
    seed: int = 0
    cumulative_seconds: float = 0.0
    edges_kept: int = 0
    weights_kept: int = 0
    best_epoch: int = 0
    mask_file: str = ""
    extra: dict = field(default_factory=dict)

    def csv_row(self) -> dict:
        d = asdict(self)
        d.pop("extra")
        return d


def _train(cfg: GraphConfig, model, init_state, x, data, edge_index, seed: int, progress: bool,
           desc: str, **kw) -> TrainResult:
    model.load_state_dict(init_state)
    torch.manual_seed(seed)
    return train_node_classifier(model, x, data, edge_index, epochs=cfg.train.epochs,
                                 lr=cfg.train.lr, weight_decay=cfg.train.weight_decay,
                                 progress=progress, desc=desc, **kw)


def _save_level(mask_dir: Path | None, method: str, seed: int, level: int, mask: Mask | None,
                edge_index: Tensor) -> str:
    if mask_dir is None:
        return ""
    from safetensors.torch import save_file

    stem = f"{method}_seed{seed}_level{level:02d}"
    name = ""
    if mask is not None:
        mask.save(mask_dir / f"{stem}.weights.safetensors")
        name = f"masks/{stem}.weights.safetensors"
    save_file({"edge_index": edge_index.detach().cpu().contiguous()},
              str(mask_dir / f"{stem}.edges.safetensors"), metadata={"format": "fedticket.edges/1"})
    return name


def run_seed(cfg: GraphConfig, data: Data, x, seed: int, schedule: list[tuple[int, float, float]],
             full_schedule: list[tuple[int, float, float]], *, mask_dir: Path | None = None,
             progress: bool = False, on_row: Callable[[LevelRow], None] | None = None,
             level_bar=None) -> list[LevelRow]:
    """Run the dense model and every configured method at the scheduled levels for one seed."""
    n = data.num_nodes
    num_classes = int(data.y.max()) + 1
    torch.manual_seed(seed)
    model = build_model(cfg.model.name, data.num_features, num_classes, cfg.model.hidden,
                        cfg.model.heads, cfg.model.dropout)
    init_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    num_weights = sum(p.numel() for p in prunable_parameters(model).values())
    edge_index = data.edge_index
    upairs = undirected_pairs(edge_index, n)
    rows: list[LevelRow] = []

    def emit(row: LevelRow) -> None:
        rows.append(row)
        if on_row is not None:
            on_row(row)
        if level_bar is not None:
            level_bar.update(1)
            level_bar.set_postfix(method=row.method, level=row.level, test=f"{row.test_accuracy:.3f}")

    # dense model: the reference point and TEDDY's teacher (trained once per dataset/model/seed)
    dense = _train(cfg, model, init_state, x, data, edge_index, seed, progress, f"dense seed {seed}")
    emit(LevelRow("dense", 0, 0.0, 0.0, dense.val_accuracy, dense.test_accuracy, dense.seconds,
                  seed, dense.seconds, upairs.num_pairs, num_weights, dense.best_epoch))
    teacher = dense.logits

    for method in cfg.methods:
        if method == "teddy":
            t0 = time.perf_counter()
            ranking = teddy_ranking(upairs)  # computed once per graph: O(|E|) + one sort
            score_seconds = time.perf_counter() - t0
            for level, gs, ws in schedule:
                t1 = time.perf_counter()
                keep = ranking.keep_mask(gs)
                ei = edge_index[:, keep]
                res = _train(cfg, model, init_state, x, data, ei, seed, progress,
                             f"teddy L{level} seed {seed}", teacher_logits=teacher,
                             kd_lambda=cfg.teddy.kd_lambda, temperature=cfg.teddy.temperature,
                             l0_density=(1.0 - ws) if ws > 0 else None,
                             l0_scope=cfg.teddy.weight_scope)
                secs = time.perf_counter() - t1
                mask = res.mask
                f = _save_level(mask_dir, "teddy", seed, level, mask, ei)
                extra = {"mask_layers": mask.layer_stats()} if mask is not None else {}
                emit(LevelRow("teddy", level, gs, ws, res.val_accuracy, res.test_accuracy, secs, seed,
                              dense.seconds + score_seconds + secs, ranking.num_kept(gs),
                              mask.num_kept if mask is not None else num_weights, res.best_epoch, f,
                              extra))
        elif method == "random":
            ranking = random_ranking(upairs, seed)
            gen = torch.Generator().manual_seed(seed)
            params = prunable_parameters(model)
            scores = {k: torch.rand(p.shape, generator=gen) for k, p in params.items()}
            for level, gs, ws in schedule:
                t1 = time.perf_counter()
                ei = edge_index[:, ranking.keep_mask(gs)]
                mask = mask_from_scores(scores, 1.0 - ws) if ws > 0 else None
                res = _train(cfg, model, init_state, x, data, ei, seed, progress,
                             f"random L{level} seed {seed}", fixed_mask=mask)
                secs = time.perf_counter() - t1
                f = _save_level(mask_dir, "random", seed, level, mask, ei)
                emit(LevelRow("random", level, gs, ws, res.val_accuracy, res.test_accuracy, secs, seed,
                              secs, ranking.num_kept(gs),
                              mask.num_kept if mask is not None else num_weights, res.best_epoch, f))
        elif method == "ugs":
            wanted = {lvl: (gs, ws) for lvl, gs, ws in schedule}
            ugs = UGS(model, init_state, x, data, edge_index, upairs,
                      graph_targets=[g for _, g, _ in full_schedule],
                      weight_targets=[w for _, _, w in full_schedule],
                      mask_epochs=cfg.ugs.mask_epochs, lr=cfg.train.lr,
                      weight_decay=cfg.train.weight_decay, edge_l1=cfg.ugs.edge_l1,
                      weight_l1=cfg.ugs.weight_l1, noise=cfg.ugs.mask_init_noise, seed=seed,
                      progress=progress)
            spent = 0.0
            for r in range(1, max(wanted) + 1):
                rnd = ugs.run_round(r)
                spent += rnd.seconds
                if r not in wanted:
                    continue
                gs, ws = wanted[r]
                t1 = time.perf_counter()
                ei, _ = edge_index_for(upairs, edge_index, rnd.pair_keep)
                res = _train(cfg, model, init_state, x, data, ei, seed, progress,
                             f"ugs L{r} retrain seed {seed}", fixed_mask=rnd.weight_mask)
                secs = time.perf_counter() - t1
                f = _save_level(mask_dir, "ugs", seed, r, rnd.weight_mask, ei)
                emit(LevelRow("ugs", r, gs, ws, res.val_accuracy, res.test_accuracy,
                              rnd.seconds + secs, seed, spent + secs, int(rnd.pair_keep.sum()),
                              rnd.weight_mask.num_kept, res.best_epoch, f))
        else:  # validated by the config; kept as a guard for direct callers
            raise ValueError(f"unknown method {method!r}")
    return rows
