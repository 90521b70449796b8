"""``fedticket graph run``: config in, results folder out.

    fedticket graph run -c configs/graph/quickstart.yaml [--set k=v ...] [--out DIR]
                        [--levels 1,5,10] [--data-root D] [--quiet]

Order of work: load + validate the config (``ConfigError`` on any bad key or value), load the data
(one ``UserError`` naming the files when they are missing offline), *then* train. The folder gets:

* ``config.yaml``   the resolved config (file < --set < --levels), enough to rerun;
* ``levels.csv``    one row per (seed, method, level), streamed as each finishes: method, level,
                    graph_sparsity, weight_sparsity, val_accuracy, test_accuracy, seconds, plus
                    seed, cumulative_seconds, edges_kept, weights_kept, best_epoch, mask_file;
* ``summary.json``  dataset, model, dense_test_accuracy and a ``levels`` list (mean and std over
                    seeds per method and level);
* ``test_acc_vs_graph_sparsity.png`` / ``test_acc_vs_weight_sparsity.png``, one curve per method;
* ``masks/``        each level's weight mask (core ``Mask`` file) and kept edges (safetensors);
* ``ugs_state/``    UGS's round state per seed (``seed<s>.safetensors``), rewritten after every
                    pruning round, so a rerun continues UGS after the last round done.

A rerun into a folder that already holds results (``levels.csv`` or ``summary.json``) follows
:func:`check_results_folder`: the same config *resumes* (levels already in ``levels.csv`` are
skipped, so an interrupted sweep costs nothing twice, UGS's rounds included); a different config
is refused in one line before any work, unless ``overwrite`` (the CLI's ``--overwrite``) clears
the old results.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

import torch
import yaml

from fedticket.config import flatten, load_config, result_keys, to_dict
from fedticket.datasets import resolve_data_root
from fedticket.errors import ConfigError
from fedticket.results import PlotProcess, RunDir, check_output_dir, plot_lines
from graph import defer_dynamo  # noqa: F401  (first graph import: keeps dynamo lazy, see there)
from graph.config import GraphConfig
from graph.data import describe, load_planetoid
from graph.features import maybe_sparse
from graph.levels import LevelRow
from graph.sweep import run_seed

RESULT_FILES = ("levels.csv", "summary.json", "test_acc_vs_graph_sparsity.png",
                "test_acc_vs_weight_sparsity.png")
RESULT_DIRS = ("masks", "ugs_state")


def _level_overrides(levels: str | None) -> list[str]:
    if levels is None or str(levels).strip() == "":
        return []
    text = str(levels).strip()
    if not text.startswith("["):
        text = f"[{text}]"
    return [f"sweep.levels={text}"]


def load(args: argparse.Namespace) -> GraphConfig:
    overrides = list(getattr(args, "set", None) or []) + _level_overrides(getattr(args, "levels", None))
    return load_config(GraphConfig, args.config, overrides)


def _mean_std(values: list[float]) -> tuple[float, float]:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    if not vals:
        return float("nan"), float("nan")
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def summarize(cfg: GraphConfig, rows: list[LevelRow], data_name: str, seconds: float) -> dict:
    groups: dict[tuple[str, int], list[LevelRow]] = {}
    for r in rows:
        groups.setdefault((r.method, r.level), []).append(r)
    order = {m: i for i, m in enumerate(["dense", *cfg.methods])}
    levels = []
    for (method, level), rs in sorted(groups.items(), key=lambda kv: (order[kv[0][0]], kv[0][1])):
        test_m, test_s = _mean_std([r.test_accuracy for r in rs])
        val_m, val_s = _mean_std([r.val_accuracy for r in rs])
        entry = {
            "method": method, "level": level,
            "graph_sparsity": rs[0].graph_sparsity, "weight_sparsity": rs[0].weight_sparsity,
            "val_accuracy": val_m, "test_accuracy": test_m, "test_accuracy_std": test_s,
            "val_accuracy_std": val_s,
            "seconds": _mean_std([r.seconds for r in rs])[0],
            "cumulative_seconds": _mean_std([r.cumulative_seconds for r in rs])[0],
            "edges_kept": rs[0].edges_kept, "weights_kept": rs[0].weights_kept,
            "num_seeds": len(rs), "per_seed_test_accuracy": [r.test_accuracy for r in rs],
        }
        mask_files = [r.mask_file for r in rs if r.mask_file]
        if mask_files:
            entry["mask_files"] = mask_files
        if rs[0].extra.get("mask_layers"):
            entry["mask_layers"] = rs[0].extra["mask_layers"]
        levels.append(entry)
    dense = [e for e in levels if e["method"] == "dense"]
    return {
        "dataset": data_name, "model": cfg.model.name, "methods": list(cfg.methods),
        "seeds": list(cfg.seeds),
        "dense_test_accuracy": dense[0]["test_accuracy"] if dense else None,
        "dense_test_accuracy_std": dense[0]["test_accuracy_std"] if dense else None,
        "total_seconds": seconds, "levels": levels,
    }


def plot(rundir: RunDir, summary: dict, plotter: PlotProcess | None = None) -> list[Path]:
    """The two accuracy plots (through ``plotter`` when given: queued there, drawn at its
    ``close``)."""
    draw = plotter.plot_lines if plotter is not None else plot_lines
    out = []
    title = f"{summary['model'].upper()} on {summary['dataset']}"
    for key, xlabel, fname in (("graph_sparsity", "graph sparsity (fraction of edges removed)",
                                "test_acc_vs_graph_sparsity.png"),
                               ("weight_sparsity", "weight sparsity (fraction of weights removed)",
                                "test_acc_vs_weight_sparsity.png")):
        series, yerr = {}, {}
        for method in summary["methods"]:
            pts = sorted((e[key], e["test_accuracy"], e["test_accuracy_std"])
                         for e in summary["levels"] if e["method"] == method)
            if pts:
                series[method] = ([p[0] for p in pts], [100 * p[1] for p in pts])
                yerr[method] = [100 * p[2] for p in pts]
        if summary["dense_test_accuracy"] is not None and series:
            xmax = max(max(xs) for xs, _ in series.values())
            d = 100 * summary["dense_test_accuracy"]
            series["dense"] = ([0.0, xmax], [d, d])
        out.append(draw(rundir.file(fname), series, xlabel, "test accuracy (%)", title, yerr=yerr))
    return out


def check_results_folder(out: str | os.PathLike, config: dict, overwrite: bool = False) -> list[LevelRow]:
    """The graph side's results-folder policy; call it before any work starts.

    * ``out`` is an existing file, or cannot be created / written: ``ConfigError``;
    * no results there yet: ``[]`` (a fresh run);
    * results of the *same* config (``config`` is the resolved config as a dict; keys whose
      schema metadata says ``results: False`` may differ): the rows already computed, to resume
      from;
    * results of a *different* config: ``ConfigError`` naming the differing keys, unless
      ``overwrite``, which deletes the old results (``levels.csv``, ``summary.json``, plots,
      ``masks/``, ``ugs_state/``) and returns ``[]``.

    Nothing is ever replaced silently: the old ``levels.csv`` is only appended to.
    """
    out = Path(out)
    # a file, or a place that cannot be written: the one shared path check (results are ours)
    check_output_dir(out, overwrite=True)
    if overwrite:  # also a folder holding only UGS round state: --overwrite starts from nothing
        for f in RESULT_FILES:
            (out / f).unlink(missing_ok=True)
        for d in RESULT_DIRS:
            shutil.rmtree(out / d, ignore_errors=True)
        return []
    present = [f for f in RESULT_FILES if (out / f).exists()]
    if not present:
        return []
    fix = "pass --overwrite to replace them, or choose another --out"
    try:
        saved = yaml.safe_load((out / "config.yaml").read_text())
        if not isinstance(saved, dict):
            raise ValueError("not a mapping")
    except (OSError, ValueError, yaml.YAMLError) as e:
        raise ConfigError(f"{out} holds results ({', '.join(present)}) but no readable config.yaml "
                          f"({type(e).__name__}); {fix}") from None
    old, new = flatten(saved), flatten(config)
    # the schema says which keys change a row's numbers; the others (seeds, methods, levels,
    # threads, paths) may differ, so a resume can add levels or seeds and reuse every row
    differ = sorted(k for k in result_keys(GraphConfig)
                    if old.get(k, "<unset>") != new.get(k, "<unset>"))
    if differ:
        shown = ", ".join(f"{k}: {old.get(k, '<unset>')!r} -> {new.get(k, '<unset>')!r}"
                          for k in differ[:3])
        more = f" (+{len(differ) - 3} more)" if len(differ) > 3 else ""
        raise ConfigError(f"{out} holds results of a different config ({shown}{more}); {fix}")
    if not (out / "levels.csv").exists():
        return []
    try:
        with open(out / "levels.csv", newline="") as fh:
            return [LevelRow.from_csv(r) for r in csv.DictReader(fh)]
    except (OSError, ValueError, TypeError) as e:
        raise ConfigError(f"{out / 'levels.csv'} cannot be read back to resume ({e}); {fix}") from None


def _default_out(cfg: GraphConfig) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path(cfg.output_dir) if cfg.output_dir else Path("runs/graph") / f"{cfg.name}-{stamp}"


def main(args: argparse.Namespace) -> int:
    cfg = load(args)
    quiet = bool(getattr(args, "quiet", False))
    say = (lambda *a, **k: None) if quiet else (lambda *a, **k: print(*a, **k, file=sys.stderr))
    sweep_all = type(cfg.sweep)(**{**to_dict(cfg.sweep), "levels": []})
    full_schedule = sweep_all.schedule()
    schedule = cfg.sweep.schedule()
    if not schedule:
        raise ConfigError("no levels selected; check sweep.levels / --levels")
    out = Path(args.out) if getattr(args, "out", None) else _default_out(cfg)
    # before any data or training: a file, an unwritable place or another config's results are
    # refused; the same config resumes in place
    previous = check_results_folder(out, to_dict(cfg), bool(getattr(args, "overwrite", False)))
    root = resolve_data_root(getattr(args, "data_root", None), cfg.data.root)
    # the plots' matplotlib import runs in a child process now, on the core that the start-up
    # (torch, PyG, the data) leaves idle, instead of at the end of the run
    plotter = PlotProcess()
    try:
        return _sweep(cfg, args, out, previous, root, schedule, full_schedule, quiet, say, plotter)
    finally:
        plotter.cancel()


def _sweep(cfg, args, out, previous, root, schedule, full_schedule, quiet, say,
           plotter: PlotProcess) -> int:
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    data = load_planetoid(cfg.dataset, root, cfg.normalize_features)  # UserError before training
    say(describe(data))
    x = maybe_sparse(data.x)

    rundir = RunDir(out)
    rundir.save_config(to_dict(cfg))
    mask_dir = None
    if cfg.save_masks:
        mask_dir = rundir.file("masks")
        mask_dir.mkdir(exist_ok=True)
    wanted = {(m, k) for m in cfg.methods for k, _, _ in schedule} | {("dense", 0)}
    have = {r.key: r for r in previous if (r.method, r.level) in wanted and r.seed in cfg.seeds}
    if have:
        say(f"resuming: {len(have)} of {len(wanted) * len(cfg.seeds)} results already in {out}")
        from fedticket.core import Mask

        for r in have.values():  # per-layer densities of a resumed row come from its mask file
            if r.method == "teddy" and r.mask_file and (out / r.mask_file).is_file():
                r.extra["mask_layers"] = Mask.load(out / r.mask_file).layer_stats()

    per_seed = 1 + len(schedule) * len(cfg.methods)
    bar = None
    if not quiet:
        from tqdm.auto import tqdm

        bar = tqdm(total=per_seed * len(cfg.seeds), initial=len(have), desc="levels", unit="run")
    rows: list[LevelRow] = list(have.values())
    t0 = time.perf_counter()
    try:
        for seed in cfg.seeds:
            done = {(m, k) for (s, m, k) in have if s == seed}
            if len(done) == per_seed:
                continue
            rows += run_seed(cfg, data, x, seed, schedule, full_schedule, mask_dir=mask_dir,
                             progress=not quiet, level_bar=bar, done=done,
                             state_dir=rundir.file("ugs_state") if "ugs" in cfg.methods else None,
                             on_row=lambda r: rundir.append_csv("levels.csv", r.csv_row()))
    finally:
        if bar is not None:
            bar.close()
    summary = summarize(cfg, rows, data.name, time.perf_counter() - t0)
    rundir.write_json("summary.json", summary)
    plots = plot(rundir, summary, plotter)
    plotter.close()
    if not quiet:
        say(format_table(summary))
        say(f"results: {rundir.path}  ({', '.join(p.name for p in plots)})")
    return 0


def format_table(summary: dict) -> str:
    lines = [f"{'method':<8} {'level':>5} {'graph sp':>9} {'weight sp':>9} {'test acc':>14} {'sec':>7}"]
    for e in summary["levels"]:
        acc = f"{100 * e['test_accuracy']:.2f}"
        if e["num_seeds"] > 1:
            acc += f" ± {100 * e['test_accuracy_std']:.2f}"
        lines.append(f"{e['method']:<8} {e['level']:>5} {e['graph_sparsity']:>9.4f} "
                     f"{e['weight_sparsity']:>9.4f} {acc:>14} {e['seconds']:>7.2f}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """Stand-alone parser (``python -m graph.run``) with the same flags as ``fedticket graph run``."""
    p = argparse.ArgumentParser(prog="python -m graph.run", description=__doc__.splitlines()[0])
    p.add_argument("-c", "--config", required=True)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--out", default=None)
    p.add_argument("--levels", default=None)
    p.add_argument("--data-root", dest="data_root", default=None)
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the results of a different config in --out")
    return p


if __name__ == "__main__":  # pragma: no cover
    from fedticket.errors import UserError

    try:
        raise SystemExit(main(build_parser().parse_args()))
    except UserError as e:
        print(f"fedticket: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
