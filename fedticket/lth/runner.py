"""``fedticket lth run``: iterative magnitude pruning with its two controls, resumable.

    fedticket lth run -c configs/lth/quickstart.yaml [--set k=v ...] [--out DIR] [--quiet]

Level 0 trains the dense network from the rewind point. Level k >= 1 prunes ``prune_fraction`` of
the weights still alive in the level-(k-1) *ticket*, by the magnitude of its final trained weights
(global or per layer), so level k has density (1-p)^k exactly, and then trains three networks on
equal terms (same data order, same iterations):

* ``ticket``       the surviving weights rewound to the rewind point (θ_0, or θ_k with
                   ``rewind_iteration`` = k: the dense net trained k iterations from θ_0);
* ``reinit``       the same mask on freshly drawn random weights (Frankle & Carbin's control);
* ``random_mask``  a random mask with the ticket's per-layer kept counts (``Mask.shuffled``) on the
                   rewind-point weights (the layer-wise shuffle control).

The folder holds ``config.yaml``, ``rewind.safetensors``, one ``levels/level_KK/`` per level
(``mask.safetensors``, ``ticket.safetensors``: the trained ticket IMP prunes from, ``rows.json``),
``levels.csv`` (ticket rows also carry the PQ Index, p=1, q=2, of the trained alive weights,
overall and per layer), ``summary.json``, ``test_accuracy_vs_density.png`` and
``early_stop_vs_density.png``. A level whose ``rows.json`` exists is skipped on a rerun, so an
interrupted run resumes at the first missing level; ``levels`` may grow between runs, any other
change of the config is refused.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import yaml

from fedticket.config import flatten, load_config, result_keys, to_dict
from fedticket.core import tensorfile
from fedticket.core.apply import apply_mask
from fedticket.core.imp import rewind_weights
from fedticket.core.mask import Mask
from fedticket.core.pqi import pq_report
from fedticket.core.prune import mask_from_scores
from fedticket.core.selection import prunable_parameters
from fedticket.datasets import resolve_data_root
from fedticket.errors import ConfigError, UserError
from fedticket.lth.config import LTHConfig
from fedticket.lth.data import load_splits
from fedticket.lth.train import train
from fedticket.models import build_model
from fedticket.results import RunDir, atomic_write_bytes, check_output_dir, plot_lines


def _save_state(path: Path, model: torch.nn.Module) -> None:
    # checksummed and atomic, like every file the project writes and reads back on resume
    atomic_write_bytes(path, tensorfile.dumps(dict(model.state_dict()),
                                              {"format": "fedticket.lth-state/1"}))


def _load_state(path: Path) -> dict:
    try:
        tensors, _ = tensorfile.loads(path.read_bytes(), str(path))
    except ValueError as e:  # damaged or foreign: one line naming the file, nothing unpickled
        raise UserError(f"{e}; delete it (that level is then recomputed) or choose another --out") from None
    return tensors


def check_resume(rundir: RunDir, cfg: LTHConfig) -> None:
    """Refuse (one line) a results folder written by a different config."""
    path = rundir.file("config.yaml")
    if not path.exists():
        return
    old = flatten(yaml.safe_load(path.read_text()) or {})
    new = flatten(to_dict(cfg))
    # the schema says which keys change numbers (levels may grow: finished levels are skipped)
    diff = sorted(k for k in result_keys(LTHConfig) if old.get(k) != new.get(k))
    if diff:
        raise ConfigError(f"results folder {rundir.path} was made by a different config "
                          f"(keys {', '.join(diff)} differ); pass another --out, or delete the folder")


def _row(level, variant, mask, res) -> dict:
    return {"level": level, "variant": variant, "density": mask.density if mask else 1.0,
            "kept": mask.num_kept if mask else None, **res.as_dict()}


def run_lth(cfg: LTHConfig, out: str | Path, data_root=None, progress: bool = True,
            say=print) -> dict:
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    check_output_dir(out, resume=True)  # a file, an unwritable place: refused before any work
    rundir = RunDir(out)
    check_resume(rundir, cfg)  # results of another config: refused before any work
    root = resolve_data_root(data_root, cfg.data.root or None)
    splits = load_splits(cfg.dataset, root, val_size=cfg.val_size, train_subset=cfg.train_subset,
                         test_subset=cfg.test_subset, seed=cfg.seed)  # UserError before training
    say(splits.describe())
    rundir.save_config(to_dict(cfg))
    spec = cfg.train_spec()
    shape = splits.shape

    def fresh(seed: int) -> torch.nn.Module:
        return build_model(cfg.model, shape, 10, seed=seed)

    names = list(prunable_parameters(fresh(cfg.seed), exclude=cfg.exclude or None))
    rewind_path = rundir.file("rewind.safetensors")
    if rewind_path.exists():
        anchor = _load_state(rewind_path)
    else:
        model = fresh(cfg.seed)
        if cfg.rewind_iteration:
            train(model, None, splits, spec, seed=cfg.seed, iterations=cfg.rewind_iteration,
                  progress=progress, desc="to rewind point")
        anchor = {k: v.detach().clone() for k, v in model.state_dict().items()}
        _save_state(rewind_path, model)

    levels_dir = rundir.file("levels")
    levels_dir.mkdir(exist_ok=True)
    rows: list[dict] = []
    prev_ticket: dict | None = None
    mask = Mask({n: torch.ones_like(anchor[n], dtype=torch.bool) for n in names})
    bar = range(cfg.levels + 1)
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(bar, desc="IMP levels", unit="level")
    for level in bar:
        ldir = levels_dir / f"level_{level:02d}"
        done = ldir / "rows.json"
        if level > 0:
            scores = {n: prev_ticket[n].abs() for n in names}
            mask = mask_from_scores(scores, (1.0 - cfg.prune_fraction) ** level, cfg.scope, base=mask)
        if done.exists():  # idempotent level: outputs exist, nothing to recompute
            rows += json.loads(done.read_text())
            prev_ticket = _load_state(ldir / "ticket.safetensors")
            saved = Mask.load(ldir / "mask.safetensors")
            if any(not torch.equal(saved[n], mask[n]) for n in names):
                raise ConfigError(f"{ldir} holds a mask this config does not reproduce; "
                                  "delete the folder and rerun")
            continue
        ldir.mkdir(exist_ok=True)
        level_rows = []
        model = fresh(cfg.seed)
        rewind_weights(model, anchor, mask)
        res = train(model, mask, splits, spec, seed=cfg.seed, progress=progress,
                    desc=f"level {level} ticket")
        level_rows.append(_row(level, "dense" if level == 0 else "ticket", mask, res))
        pqi = pq_report(model, mask)  # sparsity of the trained ticket's alive weights
        level_rows[0]["pq_index"] = pqi["overall"]
        level_rows[0]["pq_index_layers"] = json.dumps(pqi["layers"])
        prev_ticket = {k: v.detach().clone() for k, v in model.state_dict().items()}
        ticket_model = model
        if level > 0:
            for control in cfg.controls:
                if control == "reinit":
                    model = fresh((cfg.seed + 1) * 100_003 + level)
                    cmask = mask
                    apply_mask(model, cmask)
                else:
                    cmask = mask.shuffled(seed=(cfg.seed + 1) * 7_919 + level)
                    model = fresh(cfg.seed)
                    rewind_weights(model, anchor, cmask)
                res = train(model, cmask, splits, spec, seed=cfg.seed, progress=progress,
                            desc=f"level {level} {control}")
                level_rows.append(_row(level, control, cmask, res))
        mask.save(ldir / "mask.safetensors")
        _save_state(ldir / "ticket.safetensors", ticket_model)
        rundir.write_json(f"levels/level_{level:02d}/rows.json", level_rows)
        rows += level_rows
        rundir.write_csv("levels.csv", rows)
        if progress:
            r = level_rows[0]
            say(f"level {level}: density {r['density']:.4f}, ticket test {r['test_accuracy']:.4f} "
                f"(early stop at {r['early_stop_iteration']})")
    rundir.write_csv("levels.csv", rows)
    summary = summarize(cfg, rows)
    rundir.write_json("summary.json", summary)
    _plots(rundir, rows)
    return summary


def summarize(cfg: LTHConfig, rows: list[dict]) -> dict:
    """The paper's three claims, checked on this run's numbers (no claim is assumed)."""
    dense = next(r for r in rows if r["variant"] == "dense")
    tickets = [r for r in rows if r["variant"] == "ticket"]
    band = [r for r in tickets if 0.095 <= r["density"] <= 0.21]
    claims: dict = {}
    if band:
        best = max(band, key=lambda r: r["test_accuracy"])
        claims["ticket_at_10_20_density_reaches_dense"] = best["test_accuracy"] >= dense["test_accuracy"]
        claims["ticket_at_10_20_density_best"] = {k: best[k] for k in
                                                 ("level", "density", "test_accuracy",
                                                  "early_stop_iteration")}
        claims["ticket_at_10_20_density_stops_earlier"] = (
            best["early_stop_iteration"] < dense["early_stop_iteration"])
    sparsest = tickets[-1] if tickets else None
    if sparsest is not None:
        for control in cfg.controls:
            c = next((r for r in rows if r["level"] == sparsest["level"] and r["variant"] == control), None)
            if c is not None:
                claims[f"{control}_gap_at_sparsest"] = sparsest["test_accuracy"] - c["test_accuracy"]
    return {"model": cfg.model, "dataset": cfg.dataset, "iterations": cfg.iterations,
            "prune_fraction": cfg.prune_fraction, "scope": cfg.scope,
            "rewind_iteration": cfg.rewind_iteration, "seed": cfg.seed,
            "dense_test_accuracy": dense["test_accuracy"],
            "dense_early_stop_iteration": dense["early_stop_iteration"],
            "claims": claims, "levels": rows}


def _plots(rundir: RunDir, rows: list[dict]) -> None:
    dense = next(r for r in rows if r["variant"] == "dense")
    for key, fname, label in (("test_accuracy", "test_accuracy_vs_density.png", "test accuracy"),
                              ("early_stop_iteration", "early_stop_vs_density.png",
                               "early-stop iteration (best validation)")):
        series = {}
        for variant in ("ticket", "reinit", "random_mask"):
            rs = [dense] + [r for r in rows if r["variant"] == variant]
            if len(rs) > 1:
                series[variant] = ([100 * r["density"] for r in rs], [r[key] for r in rs])
        if series:
            plot_lines(rundir.file(fname), series, "weights remaining (%)", label,
                       f"{label} vs density", logx=True)


def default_out(cfg: LTHConfig) -> Path:
    return Path("runs") / "lth" / cfg.name


def main(args: argparse.Namespace) -> int:
    cfg = load_config(LTHConfig, args.config, list(getattr(args, "set", None) or []))
    quiet = bool(getattr(args, "quiet", False))
    say = (lambda *a, **k: None) if quiet else (lambda *a, **k: print(*a, **k, file=sys.stderr))
    out = Path(args.out) if getattr(args, "out", None) else default_out(cfg)
    summary = run_lth(cfg, out, getattr(args, "data_root", None), progress=not quiet, say=say)
    last = [r for r in summary["levels"] if r["variant"] in ("dense", "ticket")][-1]
    print(f"{cfg.model} on {cfg.dataset}: dense test accuracy {summary['dense_test_accuracy']:.4f}, "
          f"ticket at density {last['density']:.4f}: {last['test_accuracy']:.4f}; "
          f"results: {out}")
    return 0
