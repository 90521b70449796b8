"""Bad input fails before anything runs, with a message that names the key and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedticket.errors import ConfigError, UserError
from fedticket.fl.config import (
    config_from_run_config,
    describe_keys,
    load_fl_config,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("override, needle", [
    ("densty=0.1", "did you mean 'density'"),
    ("rounds=abc", "'rounds' must be an integer"),
    ("density=0", "density must be in (0, 1]"),
    ("density=1.5", "density must be in (0, 1]"),
    ("clients_per_round=11", "cannot sample more clients than exist"),
    ("method=fedsgd", "must be one of"),
    ("train.lr=-1", "train.lr must be > 0"),
    ("data.alpha=0", "data.alpha must be > 0"),
    ("aggregation=mean_score", "applies to hidenseek and binary-mask only"),
    ("data.parttion=iid", "Did you mean 'data.partition'"),
])
def test_bad_config_raises_config_error(override, needle):
    overrides = [override] + (["method=fedavg"] if override.startswith("aggregation") else [])
    with pytest.raises(ConfigError) as e:
        load_fl_config(REPO / "configs/fl/quickstart.yaml", overrides)
    assert needle.lower() in str(e.value).lower()


def test_all_shipped_configs_validate():
    for path in sorted((REPO / "configs/fl").glob("*.yaml")):
        cfg = load_fl_config(path)
        assert cfg.clients_per_round <= cfg.num_clients, path


def test_benchmark_configs_share_everything_but_the_method():
    cfgs = {p.stem: load_fl_config(p) for p in (REPO / "configs/fl").glob("bench_*.yaml")}
    from fedticket.fl.config import METHODS

    assert {c.method for c in cfgs.values()} == set(METHODS)  # one bench config per method
    for c in cfgs.values():
        assert (c.num_clients, c.clients_per_round, c.density) == (100, 10, 0.1)
        assert (c.data.name, c.data.partition, c.data.alpha) == ("fashionmnist", "dirichlet", 0.5)
        assert c.seed == 0 and c.model.name == "lenet300"


def test_pyproject_flower_config_equals_quickstart():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    toml = tomllib.loads((REPO / "pyproject.toml").read_text())
    flwr = toml["tool"]["flwr"]["app"]
    assert flwr["components"] == {"serverapp": "fedticket.fl.server_app:app",
                                  "clientapp": "fedticket.fl.client_app:app"}
    from flwr.common.config import flatten_dict

    run_config = {k: v for k, v in flatten_dict(flwr["config"]).items()
                  if not (k == "output_dir" and v == "")}
    assert config_from_run_config(run_config) == load_fl_config(REPO / "configs/fl/quickstart.yaml")
    # Flower accepts --run-config overrides only for keys listed there: list every key
    listed = set(flatten_dict(flwr["config"]))
    assert listed == {key for key, *_ in describe_keys()}


def test_every_key_documented_in_docs():
    doc = (REPO / "docs/fl.md").read_text()
    for key, _type, _default, help_text in describe_keys():
        assert help_text, f"config key {key} has no help text"
        assert f"`{key}`" in doc, f"config key {key} is not listed in docs/fl.md"


def test_missing_data_is_one_clear_user_error(tmp_path):
    from fedticket.fl.run import prepare

    with pytest.raises(UserError) as e:
        prepare(REPO / "configs/fl/quickstart.yaml", ["data.download=false", "data.name=mnist"],
                data_root=str(tmp_path))
    msg = str(e.value)
    assert "train-images-idx3-ubyte" in msg and str(tmp_path / "MNIST" / "raw") in msg
