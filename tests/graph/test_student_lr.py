"""``teddy.student_lr``: the TEDDY students' own learning rate (fedticket's option; null keeps
TEDDY's one lr), in the level-by-level loop and the batched fast path."""

from __future__ import annotations

import pytest
import torch

from fedticket.config import load_config
from fedticket.core.l0ball import weights_to_keep
from fedticket.errors import ConfigError
from graph.config import GraphConfig, ModelConfig, SweepConfig, TeddyConfig, TrainConfig
from graph.edges import undirected_pairs
from graph.models import build_model
from graph.sweep import run_seed
from graph.train import train_node_classifier
from graph.transforms import teddy_ranking

EPOCHS = 14
SEED = 11
LEVEL, K = 6, 6


def _cfg(batch_levels: bool, **teddy) -> GraphConfig:
    return GraphConfig(methods=["teddy"], batch_levels=batch_levels, model=ModelConfig(hidden=16),
                       train=TrainConfig(epochs=EPOCHS),
                       sweep=SweepConfig(num_levels=K, levels=[LEVEL]), teddy=TeddyConfig(**teddy))


def _rows(data, batch_levels: bool, **teddy):
    cfg = _cfg(batch_levels, **teddy)
    return run_seed(cfg, data, data.x, SEED, cfg.sweep.schedule(), cfg.sweep.schedule())


def _key(row):
    return (row.method, row.level, row.val_accuracy, row.test_accuracy, row.best_epoch,
            row.weights_kept)


@pytest.mark.parametrize("batch_levels", [False, True], ids=["level-by-level", "batched"])
def test_student_lr_changes_the_students_not_the_teacher(graph_factory, batch_levels):
    data = graph_factory(num_nodes=90, num_features=30, seed=5)
    base = _rows(data, batch_levels)
    # the option set to train.lr is the official run, row for row
    assert [_key(r) for r in _rows(data, batch_levels, student_lr=0.01)] == [_key(r) for r in base]
    fast = _rows(data, batch_levels, student_lr=0.05)
    assert _key(fast[0]) == _key(base[0])  # dense: the teacher keeps train.lr
    assert fast[1].weights_kept == base[1].weights_kept
    assert _key(fast[1]) != _key(base[1])


def test_student_lr_is_the_students_adam_lr(graph_factory):
    """The sweep's student is ``train_node_classifier(lr=student_lr)`` from θ0 against the
    teacher trained at ``train.lr``; the batched path gives the same row."""
    data = graph_factory(num_nodes=90, num_features=30, seed=5)
    lr = 0.05
    seq = _rows(data, False, student_lr=lr)
    bat = _rows(data, True, student_lr=lr)
    assert [_key(r) for r in bat] == [_key(r) for r in seq]

    cfg = _cfg(False, student_lr=lr)
    torch.manual_seed(SEED)
    model = build_model("gcn", data.num_features, int(data.y.max()) + 1, 16, dropout=0.5)
    init = {k: v.detach().clone() for k, v in model.state_dict().items()}
    torch.manual_seed(SEED)
    teacher = train_node_classifier(model, data.x, data, data.edge_index, epochs=EPOCHS, lr=0.01)
    (_, gs, ws), = cfg.sweep.schedule()
    ranking = teddy_ranking(undirected_pairs(data.edge_index, data.num_nodes))
    ei = data.edge_index[:, ranking.keep_mask(gs)]
    n = sum(p.numel() for p in model.parameters())
    model.load_state_dict(init)
    torch.manual_seed(SEED)
    student = train_node_classifier(model, data.x, data, ei, epochs=EPOCHS, lr=lr,
                                    teacher_logits=teacher.logits, kd_lambda=10.0,
                                    l0_keep=weights_to_keep(n, ws))
    assert (seq[0].test_accuracy, seq[0].best_epoch) == (teacher.test_accuracy, teacher.best_epoch)
    assert (seq[1].val_accuracy, seq[1].test_accuracy, seq[1].best_epoch) == (
        student.val_accuracy, student.test_accuracy, student.best_epoch)


def test_student_lr_must_be_positive_or_null(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("teddy: {student_lr: 0.02}\n")
    assert load_config(GraphConfig, path, []).teddy.student_lr == 0.02
    assert load_config(GraphConfig, path, ["teddy.student_lr=null"]).teddy.student_lr is None
    for bad in ("0", "-0.01"):
        with pytest.raises(ConfigError, match="teddy.student_lr"):
            load_config(GraphConfig, path, [f"teddy.student_lr={bad}"])
