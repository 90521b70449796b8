"""Which tensors are prunable: chosen by name and shape, never by module type.

Type checks miss layers (PyG's ``Linear`` is not ``nn.Linear``; torchvision mixes conv and linear
blocks), while "a parameter with at least two dimensions" is exactly the set of weight matrices and
kernels in every library. ``include`` / ``exclude`` are fnmatch globs over parameter names.
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Iterable

import torch
from torch import nn


def _as_patterns(p: str | Iterable[str] | None) -> tuple[str, ...]:
    if p is None:
        return ()
    if isinstance(p, str):
        return (p,)
    return tuple(p)


def is_prunable(name: str, tensor: torch.Tensor, include=None, exclude=None, min_ndim: int = 2) -> bool:
    inc, exc = _as_patterns(include), _as_patterns(exclude)
    if any(fnmatchcase(name, pat) for pat in exc):
        return False
    if inc:
        return any(fnmatchcase(name, pat) for pat in inc)
    return tensor.ndim >= min_ndim


def prunable_parameters(model: nn.Module, include=None, exclude=None,
                        min_ndim: int = 2) -> dict[str, nn.Parameter]:
    """Name -> parameter for every prunable tensor of ``model``, in ``named_parameters`` order.

    With ``include`` given, exactly the matching names are taken (whatever their ndim), so biases
    can be pruned on purpose; ``exclude`` always wins.
    """
    out = {n: p for n, p in model.named_parameters() if is_prunable(n, p, include, exclude, min_ndim)}
    if not out:
        raise ValueError(
            "no prunable parameters selected: the model has no parameter with "
            f"ndim >= {min_ndim} matching include={include!r} / exclude={exclude!r}; "
            "loosen the patterns")
    return out
