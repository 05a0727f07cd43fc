"""Dropping whole layers of a repeated stack: a transformer's `encoder.layer`, a decoder's
`layers`, any ModuleList of like blocks (the same class, with weights). A dropped layer is
replaced by a pass-through that takes whatever arguments the stack's caller gives it
(a Hugging Face BERT layer is called with the hidden states, the attention mask and more,
positionally and by keyword, so nn.Identity does not fit) and returns the first, the hidden
states; the exported graph has no node for it. The list keeps its length, so a model that
indexes its layers by position (`self.layer[i]` for i in range(config.num_hidden_layers))
still runs. Whether a model runs without a layer is its own code's business: `drop_error`
tries it on a copy (the search excludes what fails, with the reason)."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

from torch import nn

from autocompress.transforms.order import forward_error, set_submodule

__all__ = ["PassThrough", "Stack", "drop_error", "drop_layers", "layer_stacks"]


@dataclass(frozen=True)
class Stack:
    """A repeated stack: the ModuleList at `path`, `size` layers of class `kind`."""

    path: str
    size: int
    kind: str


class PassThrough(nn.Module):
    """A dropped layer: returns its first argument (the hidden states), whatever else it
    is given, positionally or by keyword."""

    def __init__(self, dropped: str = ""):
        super().__init__()
        self.dropped = dropped  # the class of the layer it stands for (shown in repr)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if args:
            return args[0]
        if kwargs:
            return next(iter(kwargs.values()))
        raise TypeError("a dropped layer was called without the hidden states")

    def extra_repr(self) -> str:
        return f"dropped={self.dropped}" if self.dropped else ""


def layer_stacks(model: nn.Module) -> list[Stack]:
    """The model's repeated stacks, outermost first: ModuleLists of at least two children,
    all of one class that has parameters (not a list of heads of different kinds, not
    parameter-free activations), layers already dropped left out of that test. A stack
    inside another stack's layer is listed too."""
    out = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.ModuleList) or len(module) < 2:
            continue
        kept = [child for child in module if not isinstance(child, PassThrough)]  # layers dropped already do not count
        if kept and len({type(child) for child in kept}) == 1 and any(True for _ in kept[0].parameters()):
            out.append(Stack(name, len(module), type(kept[0]).__name__))
    return out


def drop_layers(model: nn.Module, drops: Mapping[str, Sequence[int]]) -> nn.Module:
    """Replace layers `drops[path]` (indices) of each stack at `path` by PassThrough, in
    place. ValueError for a path that is not a ModuleList of the model, an index outside
    it, or dropping every layer of a stack (the stack's output would be its input)."""
    named = dict(model.named_modules())
    for path, indices in drops.items():
        stack = named.get(path)
        if not isinstance(stack, nn.ModuleList):
            raise ValueError(f"{path!r} is not a ModuleList of the model")
        wanted = sorted(set(int(i) for i in indices))
        if any(not 0 <= i < len(stack) for i in wanted):
            raise ValueError(f"{path!r} has {len(stack)} layers; cannot drop {wanted}")
        if len(wanted) == len(stack):
            raise ValueError(f"dropping all {len(stack)} layers of {path!r} leaves no stack")
        for i in wanted:
            set_submodule(model, f"{path}.{i}" if path else str(i), PassThrough(type(stack[i]).__name__))
    return model


def drop_error(model: nn.Module, example_input: Any, drops: Mapping[str, Sequence[int]]) -> Optional[str]:
    """None when the model runs (eval and train mode) with `drops` applied to a copy of it,
    else the error in one line (the model itself is not changed)."""
    trial = copy.deepcopy(model)
    try:
        drop_layers(trial, drops)
    except ValueError as exc:
        return str(exc)
    return forward_error(trial, example_input)
