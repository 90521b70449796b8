from dataclasses import dataclass, field
from typing import Literal, Optional

import pytest

from fedticket.config import ConfigError, describe, load_config, parse_overrides


@dataclass
class Train:
    lr: float = field(default=0.1, metadata={"help": "learning rate"})
    epochs: int = field(default=1, metadata={"help": "local epochs"})


@dataclass
class Cfg:
    name: str = field(default="x", metadata={"help": "run name"})
    density: float = field(default=0.1, metadata={"help": "kept fraction"})
    method: Literal["a", "b"] = "a"
    levels: list[int] = field(default_factory=lambda: [1, 2])
    seed: Optional[int] = None
    quiet: bool = False
    train: Train = field(default_factory=Train)

    def validate(self):
        if not 0 < self.density <= 1:
            raise ConfigError(f"density must be in (0, 1], got {self.density}")


def test_yaml_and_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("name: run\ndensity: 0.5\ntrain:\n  lr: 1\n")
    cfg = load_config(Cfg, p, ["train.epochs=3", "method=b", "levels=1,5,10", "seed=null"])
    assert cfg.name == "run" and cfg.density == 0.5 and cfg.train.lr == 1.0
    assert isinstance(cfg.train.lr, float)
    assert cfg.train.epochs == 3 and cfg.method == "b" and cfg.levels == [1, 5, 10]
    assert cfg.seed is None


@pytest.mark.parametrize("overrides,match", [
    (["densty=0.2"], "unknown config key 'densty'. Did you mean 'density'"),
    (["train.lrr=1"], "unknown config key 'train.lrr'"),
    (["density=abc"], "'density' must be a number"),
    (["train.epochs=1.5"], "'train.epochs' must be an integer"),
    (["method=c"], "must be one of 'a', 'b'"),
    (["quiet=maybe"], "true or false"),
    (["density=0"], r"density must be in \(0, 1\]"),
    (["novalue"], "key=value"),
    (["train=3"], "is a section"),
])
def test_errors_name_the_key(overrides, match):
    with pytest.raises(ConfigError, match=match):
        load_config(Cfg, None, overrides)


def test_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(Cfg, tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(Cfg, bad)
    lst = tmp_path / "list.yaml"
    lst.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(Cfg, lst)


def test_describe_lists_every_key_with_help():
    rows = {r[0]: r for r in describe(Cfg)}
    assert {"name", "density", "train.lr", "train.epochs", "levels"} <= set(rows)
    assert rows["train.lr"][3] == "learning rate"
    assert parse_overrides(["a.b=1", "a.c=x"]) == {"a": {"b": 1, "c": "x"}}


def test_ranges_and_result_keys_live_in_field_metadata():
    from dataclasses import dataclass

    from fedticket.config import fingerprint, option, result_keys, section

    @dataclass
    class Inner:
        steps: int = option(3, "steps", ge=1)
        workers: int = option(2, "workers", ge=1, results=False)

    @dataclass
    class Outer:
        rate: float = option(0.5, "rate", gt=0, lt=1)
        limit: int | None = option(None, "limit", ge=1)
        path: str = option("", "where", results=False)
        inner: Inner = section(Inner, "inner")
        res: Inner = section(Inner, "resources", results=False)

    for sets, msg in [(["rate=1"], "rate must be in (0, 1), got 1.0"),
                      (["rate=.nan"], "'rate' must be a number, got nan"),
                      (["limit=0"], "limit must be >= 1 or null, got 0"),
                      (["inner.steps=0"], "inner.steps must be >= 1, got 0")]:
        with pytest.raises(ConfigError) as e:
            load_config(Outer, None, sets)
        assert msg in str(e.value)
    assert load_config(Outer, None, ["limit=null"]).limit is None
    assert result_keys(Outer) == ["rate", "limit", "inner.steps"]
    a, b = load_config(Outer, None, []), load_config(Outer, None, ["path=x", "res.steps=9",
                                                                  "inner.workers=7"])
    assert fingerprint(a) == fingerprint(b)
    assert fingerprint(a) != fingerprint(load_config(Outer, None, ["inner.steps=4"]))
    rows = {r[0]: r[1] for r in describe(Outer)}
    assert rows["rate"] == "float, in (0, 1)" and rows["inner.steps"] == "int, >= 1"


def test_fl_fingerprint_from_the_schema_equals_the_checkpoint_one():
    from fedticket.config import fingerprint, result_keys
    from fedticket.fl import checkpoint
    from fedticket.fl.config import FLConfig, load_fl_config

    keys = set(result_keys(FLConfig))
    assert "train.lr" in keys and "seed" in keys
    assert not keys & {"rounds", "output_dir", "data.root", "data.download", "eval.batch_size",
                       "server.resume", "sim.num_cpus"}
    for sets in ([], ["method=fedavg", "rounds=3", "server.resume=true", "train.lr=0.01"]):
        cfg = load_fl_config(None, sets)
        assert fingerprint(cfg) == checkpoint.fingerprint(cfg)
