"""A sparsity level (its graph and weight sparsity and the exact counts they mean, computed once)
and the result row a method produces at it.

Every method (TEDDY, UGS, random) reads its targets from the same :class:`Level`, so at level k
they keep exactly the same number of undirected edges and of weights and the comparison is at
equal sparsity. Counts follow the TEDDY code: ``ceil(s · n)`` weights are removed; edges are
removed per undirected pair, ``round(s · M)`` of the ``M`` pairs (half up, see
:func:`graph.edges.num_removed`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from fedticket.core.l0ball import weights_to_keep
from graph.edges import num_removed


@dataclass(frozen=True)
class Level:
    level: int  # 0 is the dense model
    graph_sparsity: float
    weight_sparsity: float
    edges_kept: int  # undirected pairs kept (self-loops are never pruned and not counted)
    weights_kept: int  # of ``num_weights`` prunable weights (tensors with ndim >= 2)
    num_pairs: int
    num_weights: int

    def keep_of(self, total: int) -> int:
        """Entries kept out of ``total`` at this level's weight sparsity (TEDDY's ℓ0 ball over
        all parameters is a little larger than the prunable weights alone, e.g. GIN's ε)."""
        return weights_to_keep(total, self.weight_sparsity) if self.weight_sparsity > 0 else total

    @property
    def weight_density(self) -> float:
        return self.weights_kept / self.num_weights if self.num_weights else 1.0


def make_levels(schedule: list[tuple[int, float, float]], num_pairs: int, num_weights: int) -> list[Level]:
    """One :class:`Level` per ``(level, graph_sparsity, weight_sparsity)`` of the schedule."""
    return [Level(k, gs, ws, num_pairs - num_removed(gs, num_pairs),
                  weights_to_keep(num_weights, ws) if ws > 0 else num_weights, num_pairs, num_weights)
            for k, gs, ws in schedule]


def dense_level(num_pairs: int, num_weights: int) -> Level:
    return Level(0, 0.0, 0.0, num_pairs, num_weights, num_pairs, num_weights)


@dataclass
class LevelRow:
    """One result: a method at a level for one seed (a row of ``levels.csv``)."""

    method: str
    level: int
    graph_sparsity: float
    weight_sparsity: float
    val_accuracy: float
    test_accuracy: float
    seconds: float
    seed: int = 0
    cumulative_seconds: float = 0.0
    edges_kept: int = 0
    weights_kept: int = 0
    best_epoch: int = 0
    mask_file: str = ""
    extra: dict = field(default_factory=dict)

    def csv_row(self) -> dict:
        d = asdict(self)
        d.pop("extra")
        return d

    @classmethod
    def from_csv(cls, row: dict) -> "LevelRow":
        """Back from a ``levels.csv`` row (all strings); raises ValueError on a malformed row."""
        kw = {}
        for f in fields(cls):
            if f.name == "extra":
                continue
            if f.name not in row:
                raise ValueError(f"column {f.name!r} missing")
            kw[f.name] = _CAST[f.type](row[f.name]) if f.type in _CAST else row[f.name]
        return cls(**kw)

    @property
    def key(self) -> tuple[int, str, int]:
        return (self.seed, self.method, self.level)


_CAST = {"int": int, "float": float, "str": str}
