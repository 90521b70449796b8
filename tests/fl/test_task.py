"""The task interface: the config chooses what a run learns on; fl never imports the graph side."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fedticket.errors import ConfigError
from fedticket.fl.config import load_fl_config
from fedticket.fl.task import VisionTask, get_task

REPO = Path(__file__).resolve().parents[2]


def test_vision_is_the_default_and_unknown_tasks_are_refused():
    assert isinstance(get_task(load_fl_config(REPO / "configs/fl/quickstart.yaml")), VisionTask)
    with pytest.raises(ConfigError, match="unknown task 'audio'"):
        get_task("audio")
    with pytest.raises(ConfigError, match="'task' must be one of"):
        load_fl_config(None, ["task=audio"])


def test_a_vision_run_never_loads_the_graph_side():
    code = ("import sys; import fedticket.fl.server_app, fedticket.fl.client_app; "
            "from fedticket.fl.config import load_fl_config; from fedticket.fl.model import build_weights; "
            "build_weights(load_fl_config(None, [])); "
            "bad = [m for m in ('graph', 'torch_geometric') if m in sys.modules]; assert not bad, bad")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr


def test_vision_weights_are_the_models_own_under_the_seed():
    from fedticket.fl.dataset import NUM_CLASSES, input_shape
    from fedticket.fl.model import build_weights
    from fedticket.models import build_model

    cfg = load_fl_config(None, ["model.weight_init=default", "seed=3"])
    ref = build_model("lenet300", input_shape("fashionmnist"), NUM_CLASSES, seed=3).state_dict()
    got = build_weights(cfg).state_dict()
    assert ref.keys() == got.keys() and all(torch.equal(ref[k], got[k]) for k in ref)


def test_graph_task_ticket_is_pruned_to_density():
    pytest.importorskip("torch_geometric")
    from fedticket.fl.model import build_ticket

    cfg = load_fl_config(REPO / "configs/fl/cora_graph.yaml",
                         ["graph.hidden=16", "density=0.2", "model.prune_iterations=5"])
    task = get_task(cfg)
    assert task.name == "graph" and task.input_shape(cfg) == (1433,)
    ticket = build_ticket(cfg)
    total = sum(m.numel() for m in ticket.mask.values())
    assert abs(ticket.kept / total - 0.2) < 0.01
    again = build_ticket(cfg)
    assert all(torch.equal(ticket.mask[k], again.mask[k]) for k in ticket.mask)


def test_graph_fractions_must_leave_test_nodes():
    with pytest.raises(ConfigError, match="train_fraction"):
        load_fl_config(None, ["task=graph", "graph.train_fraction=0.6", "graph.val_fraction=0.4"])
