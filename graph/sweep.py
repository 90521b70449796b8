"""One seed of a graph lottery-ticket sweep: the dense teacher, then each method at each level.

Every method starts from the same initialisation θ0 (the model built right after
``torch.manual_seed(seed)``) and sees the same training nodes, so differences come from what each
method keeps, not from luck of the draw. The methods themselves live in :mod:`graph.methods`.

Rows carry both ``seconds`` (this level's own work) and ``cumulative_seconds`` (wall time to get
this level from nothing: for TEDDY the dense teacher + edge scores + this level's run; for UGS all
rounds up to this level + the retraining; for random just the run).

Resuming: rows whose ``(method, level)`` is in ``done`` are not recomputed. The dense model is
retrained (without a new row) only when a TEDDY level still needs its teacher. UGS, whose level k
needs k pruning rounds, keeps its round state in ``state_dir`` (one file per seed) and continues
after the last round saved there (:func:`graph.methods.run_ugs`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from torch_geometric.data import Data

from fedticket.core import prunable_parameters
from graph import batched
from graph.config import GraphConfig
from graph.edges import undirected_pairs
from graph.levels import LevelRow, dense_level, make_levels
from graph.methods import REGISTRY, SeedContext
from graph.models import build_model


def run_seed(cfg: GraphConfig, data: Data, x, seed: int, schedule: list[tuple[int, float, float]],
             full_schedule: list[tuple[int, float, float]], *, mask_dir: Path | None = None,
             progress: bool = False, on_row: Callable[[LevelRow], None] | None = None,
             level_bar=None, done: set | None = None,
             state_dir: Path | None = None) -> list[LevelRow]:
    """Run the dense model and every configured method at the scheduled levels for one seed.

    ``done``: ``(method, level)`` pairs already computed for this seed (skipped).
    ``state_dir``: where UGS saves its round state after every round and resumes from (None:
    no state kept, every needed round is computed).
    """
    num_classes = int(data.y.max()) + 1
    torch.manual_seed(seed)
    model = build_model(cfg.model.name, data.num_features, num_classes, cfg.model.hidden,
                        cfg.model.heads, cfg.model.dropout)
    train_rng = None
    if cfg.rng == "official":  # the TEDDY code's draws for this seed (graph/streams.py)
        from graph.streams import official_init_

        train_rng = official_init_(model, seed)
    init_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    num_weights = sum(p.numel() for p in prunable_parameters(model).values())
    upairs = undirected_pairs(data.edge_index, data.num_nodes)
    all_levels = make_levels(full_schedule, upairs.num_pairs, num_weights)
    wanted = {k for k, _, _ in schedule}
    ctx = SeedContext(cfg, data, x, seed, model, init_state, upairs,
                      [lv for lv in all_levels if lv.level in wanted], all_levels,
                      dense_level(upairs.num_pairs, num_weights), set(done or ()), mask_dir,
                      state_dir, progress, train_rng=train_rng)
    rows: list[LevelRow] = []

    def emit(row: LevelRow) -> None:
        rows.append(row)
        if on_row is not None:
            on_row(row)
        if level_bar is not None:
            level_bar.update(1)
            level_bar.set_postfix(method=row.method, level=row.level, test=f"{row.test_accuracy:.3f}")

    need_teacher = "teddy" in cfg.methods and bool(ctx.todo("teddy"))
    # the batched loop draws its own dropout masks, so the official streams go level by level
    fast = ("teddy" in cfg.methods and cfg.batch_levels and batched.supports(cfg)
            and train_rng is None)
    if ("dense", 0) not in ctx.done or need_teacher:
        # a batched TEDDY sweep trains its teacher with the batched loop's products too
        for row in (batched.run_dense_batched if fast else REGISTRY["dense"])(ctx):
            emit(row)
    for method in cfg.methods:
        if method not in REGISTRY:  # validated by the config; kept as a guard for direct callers
            raise ValueError(f"unknown method {method!r}; registered: {', '.join(REGISTRY)}")
        run = REGISTRY[method]
        if method == "teddy" and fast:
            run = batched.run_teddy_batched  # all levels in one loop (graph/batched.py)
        for row in run(ctx):
            emit(row)
    return rows


__all__ = ["LevelRow", "run_seed"]
