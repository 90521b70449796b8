"""The ``fedticket lth run`` config schema: every key, its default and why.

Defaults follow Frankle & Carbin's LeNet-300-100 setup (Adam, lr 1.2e-3, batch 60, 20 % of the
remaining weights per level, global magnitude ranking), scaled down in iterations so a benchmark
finishes in minutes on two CPU cores.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from fedticket.config import option, section
from fedticket.errors import ConfigError
from fedticket.lth.train import TrainSpec

CONTROLS = ("reinit", "random_mask")


def _h(text: str, **rng) -> dict:
    return {"help": text, **rng}


@dataclass
class DataConfig:
    root: str | None = option(None, "data folder (null = --data-root, $FEDTICKET_DATA, ./data); "
                              "the same key as on the FL and graph sides", results=False)


@dataclass
class LTHConfig:
    # one name per concept on every side: the old names say where they went
    MOVED_KEYS = {"data_root": "renamed data.root (as on the FL and graph sides): data: {root: DIR}",
                  "num_threads": "renamed torch_threads (null = torch's default; was 0)"}

    name: str = field(default="lth", metadata=_h("run name; the default results folder is runs/lth/<name>"))
    model: Literal["lenet300", "conv4", "conv6", "vgg16", "resnet18"] = field(
        default="lenet300", metadata=_h("network (fedticket.models)"))
    dataset: Literal["fashionmnist", "fashion-mnist", "mnist", "cifar10"] = field(
        default="fashionmnist", metadata=_h("vision dataset (fedticket.datasets)"))
    data: DataConfig = section(DataConfig, "where the data is", results=False)
    val_size: int = field(default=5000, metadata=_h("validation images held out of the training split", ge=1))
    train_subset: int = field(default=0, metadata=_h("keep only this many training images (0 = all)", ge=0))
    test_subset: int = field(default=0, metadata=_h("keep only the first N test images (0 = all)", ge=0))
    seed: int = field(default=0, metadata=_h("seed of the init, the data order and the controls"))
    iterations: int = field(default=1500, metadata=_h("training iterations per level and per control", ge=1))
    batch_size: int = field(default=60, metadata=_h("minibatch size", ge=1))
    optimizer: Literal["adam", "sgd"] = field(default="adam", metadata=_h("adam or sgd (momentum)"))
    lr: float = field(default=1.2e-3, metadata=_h("learning rate (constant)", gt=0))
    momentum: float = field(default=0.9, metadata=_h("SGD momentum"))
    weight_decay: float = field(default=0.0, metadata=_h("L2 weight decay", ge=0))
    eval_every: int = field(default=100, metadata=_h("validation every N iterations (early-stop resolution)", ge=1))
    levels: int = option(10, "pruning levels after the dense level 0; density (1-p)^k (may grow on "
                         "resume: finished levels are skipped)", ge=0, results=False)
    prune_fraction: float = field(default=0.2, metadata=_h("p: fraction of the remaining weights pruned per level", gt=0, lt=1))
    scope: Literal["global", "layer"] = field(default="global", metadata=_h("rank magnitudes over all layers or per layer"))
    rewind_iteration: int = field(default=0, metadata=_h("0 = reset to the init; k > 0 = rewind to iteration k (late rewinding)"))
    controls: list[str] = field(default_factory=lambda: list(CONTROLS),
                                metadata=_h("controls run on every level's mask: reinit, random_mask"))
    exclude: list[str] = field(default_factory=list, metadata=_h("parameter-name globs never pruned"))
    torch_threads: int | None = option(None, "torch CPU threads (null = torch's default)", ge=1,
                                       results=False)

    def validate(self) -> None:
        # single-key ranges live in the field metadata (checked by fedticket.config)
        if not 0 <= self.rewind_iteration < self.iterations:
            raise ConfigError(f"rewind_iteration must be in [0, iterations={self.iterations}), "
                              f"got {self.rewind_iteration}")
        bad = [c for c in self.controls if c not in CONTROLS]
        if bad:
            raise ConfigError(f"unknown control(s) {bad}; choose from {list(CONTROLS)}")

    def train_spec(self) -> TrainSpec:
        return TrainSpec(self.iterations, self.batch_size, self.optimizer, self.lr, self.momentum,
                         self.weight_decay, self.eval_every)

    def input_shape(self) -> tuple[int, int, int]:
        return (3, 32, 32) if self.dataset == "cifar10" else (1, 28, 28)
