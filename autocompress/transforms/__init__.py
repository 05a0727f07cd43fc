"""Model transforms: each config type maps to one registered function
`fn(model, cfg, ctx) -> model` that returns a new model and never mutates its input."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
from torch import nn

TransformFn = Callable[[nn.Module, Any, "TransformContext"], nn.Module]
_REGISTRY: dict[type, TransformFn] = {}


@dataclass(frozen=True)
class TransformContext:
    """What transforms may need besides the model: an example input batch, and training
    samples for data-driven criteria (activation statistics), fed in `batch_size` batches."""

    example_input: torch.Tensor
    calibration: Optional[torch.Tensor] = None
    batch_size: int = 64


def register_transform(cfg_type: type) -> Callable[[TransformFn], TransformFn]:
    def deco(fn: TransformFn) -> TransformFn:
        if cfg_type in _REGISTRY:
            raise ValueError(f"a transform for {cfg_type.__name__} is already registered")
        _REGISTRY[cfg_type] = fn
        return fn

    return deco


def apply_transform(model: nn.Module, cfg: Any, ctx: TransformContext) -> nn.Module:
    """Apply the transform registered for type(cfg) to a copy of `model`."""
    _load_builtin()
    try:
        fn = _REGISTRY[type(cfg)]
    except KeyError:
        raise KeyError(f"no transform registered for {type(cfg).__name__}; known: {[t.__name__ for t in _REGISTRY]}") from None
    return fn(copy.deepcopy(model), cfg, ctx)


def _load_builtin() -> None:
    from autocompress.transforms import prune  # noqa: F401  (registers itself)
    from autocompress.transforms import lowrank  # noqa: F401
    from autocompress.transforms import substitute  # noqa: F401


__all__ = ["TransformContext", "apply_transform", "register_transform"]
