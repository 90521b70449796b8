"""Keep ``torch._dynamo`` unloaded until something uses it, although PyG imports it at load.

``import torch_geometric`` (any of its submodules) runs ``torch_geometric/isinstance.py``, which
does ``import torch._dynamo`` for one ``isinstance`` check against ``OptimizedModule`` (compiled
models). Loading dynamo costs 1.3-1.9 s on this project's 2-core CPU: the largest single part of
a graph sweep's start-up (the 20-level Cora sweep takes about 25 s in all), for a module the
graph side never uses. torch itself loads ``torch._dynamo`` lazily (``torch.__getattr__``); PyG's
statement defeats that.

:func:`defer` puts a placeholder module in ``sys.modules["torch._dynamo"]`` before PyG is
imported. It carries the real module's ``__spec__`` (so ``import torch._dynamo`` finds it and
returns), and the first access to any other attribute (``torch._dynamo.OptimizedModule``,
``torch._dynamo.graph_break()``, ``from torch._dynamo import x``, a submodule import) replaces it
by the real module, loaded then, and answers from that. Nothing is lost: whoever uses dynamo
(``torch.compile``, ``torch.optim``'s ``step``, PyG's ``is_torch_instance``) gets the real one,
only later. It is a no-op when dynamo is already loaded or cannot be found, and
``FEDTICKET_DEFER_DYNAMO=0`` switches it off.

Importing this module calls :func:`defer` (``graph.run`` imports it before any other graph
module, so ``fedticket graph run`` and ``python -m graph.run`` start without dynamo).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import threading
import types

NAME = "torch._dynamo"
_lock = threading.Lock()


class _Deferred(types.ModuleType):
    """Stands in for ``torch._dynamo`` until an attribute is asked for."""

    def __getattr__(self, attr: str):  # only called for attributes the placeholder lacks
        return getattr(_load(self), attr)


def _load(placeholder: types.ModuleType) -> types.ModuleType:
    with _lock:
        if sys.modules.get(NAME) is placeholder:
            del sys.modules[NAME]
        # the import system's own per-module lock makes a concurrent second load wait for this one
        return importlib.import_module(NAME)


def is_deferred() -> bool:
    """True while ``torch._dynamo`` is the placeholder (the real module not loaded yet)."""
    return isinstance(sys.modules.get(NAME), _Deferred)


def defer() -> bool:
    """Install the placeholder; True when it is in place (now or from an earlier call)."""
    if os.environ.get("FEDTICKET_DEFER_DYNAMO", "1") == "0":
        return False
    with _lock:
        if NAME in sys.modules:
            return is_deferred()
        try:
            spec = importlib.util.find_spec(NAME)  # imports torch, not dynamo
        except (ImportError, ValueError):
            return False
        if spec is None:
            return False
        module = _Deferred(NAME)
        # only the spec: ``import torch._dynamo`` reads it; no ``__path__``, so a submodule
        # import asks ``__getattr__`` for it and loads the package's ``__init__`` first
        module.__spec__ = spec
        sys.modules[NAME] = module
    return True


defer()

__all__ = ["defer", "is_deferred"]
