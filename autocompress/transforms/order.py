"""Model order: which layers run, in which order, in one forward pass on an example input.
Segments, output-layer detection and QAT bit assignment all use this one definition."""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

LAYERS = (nn.Linear, nn.modules.conv._ConvNd)


def run_once(model: nn.Module, example_input: Any) -> None:
    """One forward pass in eval mode without gradients (BatchNorm statistics untouched),
    restoring the caller's train/eval mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            if isinstance(example_input, (tuple, list)):
                model(*example_input)
            else:
                model(example_input)
    finally:
        model.train(was_training)


def layer_calls(model: nn.Module, example_input: Any, *, accept: Callable[[nn.Module], bool] = lambda m: isinstance(m, LAYERS)) -> list[nn.Module]:
    """Every call of an accepted module during one forward pass, in order (a module
    called twice appears twice)."""
    calls: list[nn.Module] = []
    hooks = [m.register_forward_hook(lambda mod, i, o: calls.append(mod)) for m in model.modules() if accept(m)]
    try:
        run_once(model, example_input)
    finally:
        for h in hooks:
            h.remove()
    return calls


def execution_order(model: nn.Module, example_input: Any, **kw) -> list[nn.Module]:
    """Accepted modules (default: Conv/Linear) in the order they first run."""
    return list({id(m): m for m in layer_calls(model, example_input, **kw)}.values())
