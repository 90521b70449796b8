"""The graph results folder: a rerun resumes, a different config is refused, nothing is replaced
silently; the method registry and the Level counts."""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path

import pytest

from fedticket.config import to_dict
from fedticket.errors import ConfigError, UserError
from graph.config import METHODS, GraphConfig
from graph.levels import LevelRow, make_levels
from graph.methods import REGISTRY
from graph.run import check_results_folder

REPO = Path(__file__).resolve().parents[2]


def test_registry_holds_every_configurable_method():
    assert set(REGISTRY) == {"dense", *METHODS}


def test_levels_hold_exact_counts_once():
    levels = make_levels([(k, 1 - 0.95 ** k, 1 - 0.8 ** k) for k in range(1, 21)], 5278, 737280)
    for lv in levels:
        assert lv.weights_kept == 737280 - math.ceil(737280 * lv.weight_sparsity)
        assert lv.edges_kept == 5278 - int(lv.graph_sparsity * 5278 + 0.5)
    kept = [lv.edges_kept for lv in levels]
    assert kept == sorted(kept, reverse=True)


def _cfg(**kw) -> dict:
    d = to_dict(GraphConfig())
    d.update(kw)
    return d


def _row(method="teddy", level=1, seed=0) -> dict:
    return LevelRow(method, level, 0.05, 0.2, 0.8, 0.81, 1.0, seed).csv_row()


def _fill(out: Path, cfg: dict, rows: list[dict]) -> None:
    from fedticket.results import RunDir

    rd = RunDir(out)
    rd.save_config(cfg)
    for r in rows:
        rd.append_csv("levels.csv", r)


def test_fresh_and_same_config_resume(tmp_path):
    out = tmp_path / "run"
    assert check_results_folder(out, _cfg()) == []  # nothing there yet
    _fill(out, _cfg(), [_row("dense", 0), _row("teddy", 1)])
    # same config, other levels/seeds/threads selected: resume with the rows already there
    again = _cfg(seeds=[0, 1], torch_threads=1)
    again["sweep"]["levels"] = [1, 2]
    rows = check_results_folder(out, again)
    assert [r.key for r in rows] == [(0, "dense", 0), (0, "teddy", 1)]


def test_different_config_is_refused_and_nothing_changes(tmp_path):
    out = tmp_path / "run"
    _fill(out, _cfg(), [_row()])
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    other = _cfg()
    other["train"]["epochs"] = 10
    with pytest.raises(ConfigError, match=r"different config \(train\.epochs: 200 -> 10\).*--overwrite"):
        check_results_folder(out, other)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert check_results_folder(out, other, overwrite=True) == []
    assert not (out / "levels.csv").exists()


@pytest.mark.parametrize("case", ["file", "no_config", "bad_csv"])
def test_unusable_folders_are_refused(tmp_path, case):
    out = tmp_path / "run"
    if case == "file":
        out.write_text("x")
        match = "existing file"
    else:
        _fill(out, _cfg(), [_row()])
        if case == "no_config":
            (out / "config.yaml").unlink()
            match = "no readable config.yaml"
        else:
            with open(out / "levels.csv", "w", newline="") as fh:
                csv.writer(fh).writerows([["method", "level"], ["teddy", "x"]])
            match = "cannot be read back"
    with pytest.raises(UserError, match=match):  # ConfigError is a UserError too
        check_results_folder(out, _cfg())


def test_cli_run_refuses_before_loading_data(tmp_path):
    """The policy runs before the data is touched: a bogus data root is never reached."""
    from graph.run import main

    out = tmp_path / "run"
    _fill(out, _cfg(), [_row()])
    args = argparse.Namespace(config=str(REPO / "configs/graph/quickstart.yaml"), set=[], out=str(out),
                              levels=None, data_root=str(tmp_path / "nowhere"), quiet=True)
    with pytest.raises(ConfigError, match="different config"):
        main(args)


def test_methods_keep_the_level_s_edge_count(graph_factory):
    """TEDDY and random read a level's edge count from the Level (``keep_top``): the same edges
    as the sparsity they were made from, and a count outside the graph is refused."""
    from graph.edges import undirected_pairs
    from graph.transforms import random_ranking, teddy_ranking

    data = graph_factory(num_nodes=80, seed=2)
    up = undirected_pairs(data.edge_index, data.num_nodes)
    levels = make_levels([(k, 1 - 0.8 ** k, 1 - 0.8 ** k) for k in range(1, 8)], up.num_pairs, 100)
    for ranking in (teddy_ranking(up), random_ranking(up, 3)):
        for lv in levels:
            keep = ranking.keep_top(lv.edges_kept)
            assert int(keep.sum()) == 2 * lv.edges_kept  # both directions of each kept pair
            assert keep.equal(ranking.keep_mask(lv.graph_sparsity))
        with pytest.raises(ValueError, match="cannot keep"):
            ranking.keep_top(up.num_pairs + 1)
