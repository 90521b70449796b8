"""Bad configs fail before any data is loaded, with a message that names the key."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from fedticket.config import load_config
from fedticket.errors import ConfigError, UserError
from graph.config import GraphConfig
from graph.run import load, main

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted((REPO / "configs" / "graph").glob("*.yaml"))


def _args(config, sets=(), levels=None, out=None, data_root=None):
    return argparse.Namespace(config=str(config), set=list(sets), out=out, levels=levels,
                              data_root=data_root, quiet=True)


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_shipped_config_loads(path):
    cfg = load_config(GraphConfig, path)
    assert cfg.sweep.schedule()


def test_shipped_configs_cover_methods_models_datasets():
    seen = set()
    for p in CONFIGS:
        cfg = load_config(GraphConfig, p)
        for m in cfg.methods:
            seen.add((cfg.dataset, cfg.model.name, m))
    for d in ("cora", "citeseer", "pubmed"):
        for model in ("gcn", "gat", "gin"):
            for m in ("teddy", "ugs", "random"):
                assert (d, model, m) in seen, (d, model, m)


def test_default_schedule_is_the_ugs_schedule():
    cfg = GraphConfig()
    sched = cfg.sweep.schedule()
    assert len(sched) == 20
    k, gs, ws = sched[9]
    assert k == 10 and gs == pytest.approx(1 - 0.95 ** 10) and ws == pytest.approx(1 - 0.8 ** 10)


@pytest.mark.parametrize("sets, match", [
    (["modle.name=gcn"], "unknown config key 'modle'"),
    (["sweep.graph_rate=1.0"], "sweep.graph_rate"),
    (["sweep.weight_rate=-0.1"], "sweep.weight_rate"),
    (["sweep.graph_sparsities=[0.1, 1.0]", "sweep.num_levels=2"], "graph_sparsities"),
    (["sweep.weight_sparsities=[0.5]", "sweep.num_levels=2"], "one per level"),
    (["dataset=coraa"], "did you mean 'cora'"),
    (["dataset=ogbn-arxiv"], "unknown dataset"),
    (["methods=[teddy, ugss]"], "did you mean 'ugs'"),
    (["model.name=sage"], "model.name"),
    (["train.epochs=0"], "train.epochs"),
    (["model.hidden=100", "model.name=gat", "model.heads=8"], "divisible"),
    (["sweep.levels=[0, 3]"], "outside"),
    (["teddy.temperature=0"], "temperature"),
])
def test_bad_values_raise_config_error(sets, match):
    with pytest.raises(ConfigError, match=match):
        load(_args(REPO / "configs/graph/quickstart.yaml", sets))


def test_levels_flag():
    cfg = load(_args(REPO / "configs/graph/quickstart.yaml", levels="1,5,10"))
    assert [k for k, _, _ in cfg.sweep.schedule()] == [1, 5, 10]
    with pytest.raises(ConfigError, match="sweep.levels"):
        load(_args(REPO / "configs/graph/quickstart.yaml", levels="1,x"))
    with pytest.raises(ConfigError, match="outside"):
        load(_args(REPO / "configs/graph/quickstart.yaml", levels="21"))


def test_bad_config_fails_before_data_and_writes_nothing(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(ConfigError):
        main(_args(REPO / "configs/graph/quickstart.yaml", ["sweep.graph_rate=1.5"], out=str(out),
                   data_root=str(tmp_path / "nowhere")))
    assert not out.exists()


def test_missing_data_is_one_user_error_before_training(tmp_path, monkeypatch):
    import graph.data as gd

    def offline(*a, **k):
        raise OSError("network is unreachable")

    monkeypatch.setattr("torch_geometric.datasets.planetoid.Planetoid.download", offline)
    out = tmp_path / "run"
    with pytest.raises(UserError) as e:
        main(_args(REPO / "configs/graph/quickstart.yaml", out=str(out),
                   data_root=str(tmp_path / "empty")))
    msg = str(e.value)
    assert "ind.cora.x" in msg and "ind.cora.test.index" in msg
    assert str(tmp_path / "empty" / "Planetoid" / "Cora" / "raw") in msg
    assert not out.exists()
    assert gd.raw_files("citeseer")[0] == "ind.citeseer.x"


def test_cli_turns_bad_input_into_one_line(capsys):
    from fedticket.cli import main as cli_main

    rc = cli_main(["graph", "run", "-c", str(REPO / "configs/graph/quickstart.yaml"),
                   "--set", "sweep.weight_rate=1.0", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "fedticket: error: sweep.weight_rate must be in [0, 1)" in err
    assert "Traceback" not in err


def _keys(cls, prefix=""):
    import dataclasses
    import typing

    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            yield from _keys(hints[f.name], f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", f.metadata.get("help", ""), f


def test_every_key_documented_in_docs():
    import dataclasses

    doc = (REPO / "docs/graph.md").read_text()
    for key, help_text, f in _keys(GraphConfig):
        assert help_text, f"config key {key} has no help text"
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        assert f"| `{key}` |" in doc, f"config key {key} is not listed in docs/graph.md"
        assert f"| `{default}` |" in doc.split(f"| `{key}` |", 1)[1].split("\n", 1)[0], \
            f"docs/graph.md lists a stale default for {key}"
