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
