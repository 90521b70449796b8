"""What a federated run learns on: a task = model factory + SynFlow input + partitions + data.

The config's ``task`` key chooses one. ``vision`` (image classification on torchvision datasets,
flwr-datasets partitions) lives here; ``graph`` (node classification on disjoint parts of a
citation graph) lives in the graph side and is imported by its dotted path only when a run asks
for it, so ``fedticket.fl`` never imports ``graph`` (tests/test_architecture.py) and a vision
run never loads PyG. A task object answers:

- ``model_key(cfg)``: what determines the architecture (the frozen-weight cache key);
- ``build_model(cfg, seed=None)``: a fresh ``nn.Module`` (weights come from the seed after);
- ``input_shape(cfg)``: the shape of one example SynFlow's all-ones input takes (data-free);
- ``resolve_root(cfg, flag)``: the data root, checked (UserError) before round 1;
- ``client_data(cfg, root, pid)``: ``(x, y, x_val, y_val)`` of one client; the methods only ever
  index ``x`` (``x[idx]``, ``x[a:b]``) and take ``len(y)``, so ``x`` may be any indexable view;
- ``test_data(cfg, root)``: ``(x, y)`` of the server's global evaluation;
- ``dataset_label(cfg)``: the dataset's name in summaries and plot titles;
- ``cacheable``: whether ``client_data`` is tensors a node may cache on its disk.
"""

from __future__ import annotations

import importlib

from torch import nn

from fedticket.errors import ConfigError

#: task name -> "module:Class"; the graph task is resolved lazily (see the module docstring)
TASKS = {"vision": "fedticket.fl.task:VisionTask", "graph": "graph.fedtask:GraphTask"}


class VisionTask:
    """Image classification: ``data.*`` (dataset, flwr-datasets partitioner), ``model.name``."""

    name = "vision"
    cacheable = True

    def model_key(self, cfg) -> tuple:
        return (cfg.model.name, cfg.data.name)

    def build_model(self, cfg, seed: int | None = None) -> nn.Module:
        from fedticket.fl.dataset import NUM_CLASSES, input_shape
        from fedticket.models import build_model

        if seed is None:
            return build_model(cfg.model.name, input_shape(cfg.data.name), NUM_CLASSES)
        return build_model(cfg.model.name, input_shape(cfg.data.name), NUM_CLASSES, seed=seed)

    def input_shape(self, cfg) -> tuple[int, ...]:
        from fedticket.fl.dataset import input_shape

        return tuple(input_shape(cfg.data.name))

    def dataset_label(self, cfg) -> str:
        return cfg.data.name

    def resolve_root(self, cfg, flag=None) -> str:
        from fedticket.fl.dataset import resolve_root

        return str(resolve_root(cfg.data.name, flag, cfg.data.root, cfg.data.download))

    def client_data(self, cfg, root: str, partition_id: int):
        from fedticket.fl.dataset import client_tensors

        return client_tensors(cfg, root, partition_id)

    def test_data(self, cfg, root: str):
        from fedticket.fl.dataset import test_tensors

        return test_tensors(cfg, root)


_loaded: dict[str, object] = {}


def get_task(cfg_or_name):
    """The task object of a config (or a task name), imported on first use and kept."""
    name = cfg_or_name if isinstance(cfg_or_name, str) else getattr(cfg_or_name, "task", "vision")
    if name not in _loaded:
        if name not in TASKS:
            raise ConfigError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}")
        module, cls = TASKS[name].split(":")
        try:
            _loaded[name] = getattr(importlib.import_module(module), cls)()
        except ImportError as e:
            raise ConfigError(f"task={name!r} needs {module} ({e}); install fedticket with its "
                              "graph side (torch-geometric, pymetis)") from None
    return _loaded[name]
