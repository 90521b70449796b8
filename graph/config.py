"""The graph-side config schema: every key, its default and why it has that default.

Loaded with ``fedticket.config.load_config(GraphConfig, path, overrides)``: unknown keys, wrong
types and impossible values (``validate``) raise ``ConfigError`` before any data is touched.
Defaults follow the TEDDY code (lr 0.01, weight decay 5e-4, 200 epochs, hidden 512, 2 layers,
λ = 10, the ℓ0 ball over all parameters) and the UGS schedule (p_g = 0.05, p_w = 0.2 per level,
20 levels); UGS's ℓ1 coefficients are those the TEDDY code runs UGS with (1e-6 edges, 1e-5 weights).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from fedticket.errors import ConfigError

METHODS = ("teddy", "ugs", "random")


def _free(text: str) -> dict:
    """Help of a key that chooses which rows a run computes, where, or how fast, never what a
    row's number is: a resume may change it (``results`` metadata, fedticket.config)."""
    return {"help": text, "results": False}


def _h(text: str, **rng) -> dict:
    """Help and range (gt/ge/lt/le, checked by fedticket.config for every side alike)."""
    return {"help": text, **rng}


@dataclass
class ModelConfig:
    name: Literal["gcn", "gat", "gin"] = field(default="gcn", metadata=_h("GNN: gcn, gat or gin (two layers each)"))
    hidden: int = field(default=512, metadata=_h("hidden width (GAT: total over heads, hidden/heads per head)", ge=1))
    heads: int = field(default=8, metadata=_h("GAT attention heads in the first layer", ge=1))
    dropout: float = field(default=0.5, metadata=_h("dropout on the hidden layer (GAT: also input and first-layer attention, 0.6 in the paper; GIN: 0 in the TEDDY code)", ge=0, lt=1))

    def validate(self) -> None:
        if self.name == "gat" and self.hidden % self.heads:
            raise ConfigError(f"model.hidden ({self.hidden}) must be divisible by model.heads "
                              f"({self.heads}) for GAT")


@dataclass
class TrainConfig:
    lr: float = field(default=0.01, metadata=_h("Adam learning rate", gt=0))
    weight_decay: float = field(default=5e-4, metadata=_h("Adam (L2) weight decay", ge=0))
    epochs: int = field(default=200, metadata=_h("full-batch epochs per training run", ge=1))


@dataclass
class SweepConfig:
    graph_rate: float = field(default=0.05, metadata=_h("p_g: level k has graph sparsity 1-(1-p_g)^k", ge=0, lt=1))
    weight_rate: float = field(default=0.2, metadata=_h("p_w: level k has weight sparsity 1-(1-p_w)^k", ge=0, lt=1))
    num_levels: int = field(default=20, metadata=_h("K: levels 1..K", ge=1))
    levels: list[int] = field(default_factory=list, metadata=_free("run only these levels (empty: all 1..K); --levels 1,5,10"))
    graph_sparsities: list[float] = field(default_factory=list, metadata=_h("explicit graph sparsity per level (overrides graph_rate; length K)"))
    weight_sparsities: list[float] = field(default_factory=list, metadata=_h("explicit weight sparsity per level (overrides weight_rate; length K)"))

    def validate(self) -> None:
        for key in ("graph_sparsities", "weight_sparsities"):
            vals = getattr(self, key)
            if vals and len(vals) != self.num_levels:
                raise ConfigError(f"sweep.{key} has {len(vals)} entries but sweep.num_levels is "
                                  f"{self.num_levels}; give one per level or leave it empty")
            for v in vals:
                if not (0.0 <= v < 1.0) or math.isnan(v):
                    raise ConfigError(f"sweep.{key} entries must be sparsities in [0, 1), got {v} "
                                      "(1 would remove everything)")
        bad = [k for k in self.levels if not (1 <= k <= self.num_levels)]
        if bad:
            raise ConfigError(f"sweep.levels {bad} outside 1..{self.num_levels} (sweep.num_levels)")

    def schedule(self) -> list[tuple[int, float, float]]:
        """``(level, graph_sparsity, weight_sparsity)`` for the selected levels, ascending."""
        out = []
        chosen = sorted(set(self.levels)) if self.levels else range(1, self.num_levels + 1)
        for k in chosen:
            gs = (self.graph_sparsities[k - 1] if self.graph_sparsities
                  else 1.0 - (1.0 - self.graph_rate) ** k)
            ws = (self.weight_sparsities[k - 1] if self.weight_sparsities
                  else 1.0 - (1.0 - self.weight_rate) ** k)
            out.append((k, gs, ws))
        return out


@dataclass
class TeddyConfig:
    kd_lambda: float = field(default=10.0, metadata=_h("λ of CE + λ·KL(teacher‖student) (10: the TEDDY README); 0 disables distillation", ge=0))
    temperature: float = field(default=1.0, metadata=_h("distillation temperature T (loss scaled by T²)", gt=0))
    weight_scope: Literal["global", "layer"] = field(default="global", metadata=_h("ℓ0 projection as one global selection (global, TEDDY) or per tensor (layer)"))
    project: Literal["all", "weights"] = field(default="all", metadata=_h("ℓ0 ball over all parameters incl. biases, GIN ε, GAT attention (all, TEDDY) or weight tensors only"))
    ramp_epochs: int = field(default=0, metadata=_h("ℓ0 sparsity ramp (fedticket's option, not TEDDY's): the projection's budget falls from all entries to the level's over the first R epochs (cubic, gradual magnitude pruning) and the best-validation epoch is picked from epoch R on; 0: the level's budget from the first step (TEDDY)", ge=0))
    teacher: Literal["best", "last"] = field(default="best", metadata=_h("the dense teacher's logits from its best-validation epoch (best, TEDDY) or its last epoch (last)"))
    student_lr: float | None = field(default=None, metadata=_h("Adam learning rate of the TEDDY students (fedticket's option, not TEDDY's); null: train.lr, the dense teacher's (TEDDY trains both with one lr)", gt=0))


@dataclass
class UGSConfig:
    mask_epochs: int = field(default=200, metadata=_h("epochs of joint weight + mask training per pruning round", ge=1))
    edge_l1: float = field(default=1e-6, metadata=_h("ℓ1 coefficient on the edge mask (lamb_a of the TEDDY code's UGS)", ge=0))
    weight_l1: float = field(default=1e-5, metadata=_h("ℓ1 coefficient on the weight masks (lamb_w of the TEDDY code's UGS)", ge=0))
    mask_init_noise: float = field(default=1e-5, metadata=_h("masks start at 1 + noise·U(0,1), to break ties"))


@dataclass
class DataConfig:
    root: str | None = field(default=None, metadata=_free("folder holding Planetoid/<Name>/raw (else --data-root, $FEDTICKET_DATA, ./data); the FL side's data.root"))


@dataclass
class GraphConfig:
    # one name per concept on both sides (fedticket.fl.config): the old names say where they went
    MOVED_KEYS = {"data_root": "renamed data.root (as on the FL side): data: {root: DIR}",
                  "num_threads": "renamed torch_threads (null = torch's default; was 0)",
                  "out_root": "replaced by output_dir, the results folder itself (null = "
                              "runs/graph/<name>-<time>)"}

    name: str = field(default="graph", metadata=_free("run name (results folder name when --out is not given)"))
    dataset: str = field(default="cora", metadata=_h("cora, citeseer or pubmed (PyG Planetoid, public split)"))
    normalize_features: bool = field(default=True, metadata=_h("row-normalise features (as the GCN/TEDDY code)"))
    methods: list[str] = field(default_factory=lambda: ["teddy"], metadata=_free("any of teddy, ugs, random; the dense model is always trained"))
    seeds: list[int] = field(default_factory=lambda: [0], metadata=_free("one full sweep per seed; summary reports mean ± std"))
    torch_threads: int | None = field(default=None, metadata={**_free("torch CPU threads (null: torch's default; 1 is fastest on a busy machine); the FL side's sim.torch_threads"), "ge": 1})
    rng: Literal["fedticket", "official"] = field(default="fedticket", metadata=_h("random streams: fedticket (its own Glorot draw, 16-bit dropout, fast batched path) or official (the TEDDY code's draws for the same seed: weights as its PyG/torch modules draw them, F.dropout from the state after the init, level by level; gcn and gin; graph/streams.py)"))
    batch_levels: bool = field(default=True, metadata=_free("train TEDDY's levels of a seed (and its dense teacher) together in one loop with faster sparse products (graph/batched.py; GCN with teddy.weight_scope global, else level by level): the same runs to float rounding, several times faster"))
    save_masks: bool = field(default=True, metadata=_free("save each level's weight mask and edge mask (safetensors)"))
    output_dir: str | None = field(default=None, metadata=_free("results folder (--out overrides; null: runs/graph/<name>-<time>), as on the FL side"))
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    teddy: TeddyConfig = field(default_factory=TeddyConfig)
    ugs: UGSConfig = field(default_factory=UGSConfig)

    def validate(self) -> None:
        from graph.data import DATASETS

        if self.dataset.lower() not in DATASETS:
            import difflib

            hint = difflib.get_close_matches(self.dataset.lower(), list(DATASETS), n=1)
            extra = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise ConfigError(f"config key 'dataset': unknown dataset {self.dataset!r}{extra}; "
                              f"choose one of {', '.join(DATASETS)}")
        if not self.methods:
            raise ConfigError("config key 'methods' is empty; list any of " + ", ".join(METHODS))
        for m in self.methods:
            if m not in METHODS:
                import difflib

                hint = difflib.get_close_matches(m, METHODS, n=1)
                extra = f" (did you mean {hint[0]!r}?)" if hint else ""
                raise ConfigError(f"config key 'methods': unknown method {m!r}{extra}; "
                                  f"choose from {', '.join(METHODS)} (dense always runs)")
        if len(set(self.methods)) != len(self.methods):
            raise ConfigError(f"config key 'methods' lists a method twice: {self.methods}")
        if self.rng == "official" and self.model.name not in ("gcn", "gin"):
            raise ConfigError(f"rng: official reproduces the TEDDY code's streams for gcn and gin, "
                              f"not {self.model.name} (its GAT is 8 x 512 wide); use rng: fedticket")
        if self.teddy.ramp_epochs > self.train.epochs:
            raise ConfigError(f"teddy.ramp_epochs ({self.teddy.ramp_epochs}) is more than "
                              f"train.epochs ({self.train.epochs}): the ramp must end before "
                              "training does; lower it (0: no ramp)")
        if not self.seeds:
            raise ConfigError("config key 'seeds' is empty; give at least one seed, e.g. [0]")
        if len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"config key 'seeds' repeats a seed: {self.seeds}")
