"""Model order: which layers run, in which order, in one forward pass on an example input.
Segments, output-layer detection and QAT bit assignment all use this one definition."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator, Optional

import torch
from torch import nn

from autocompress.data import structure as st

LAYERS = (nn.Linear, nn.modules.conv._ConvNd)


def run_once(model: nn.Module, example_input: Any) -> None:
    """One forward pass in eval mode without gradients (BatchNorm statistics untouched),
    restoring the caller's train/eval mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            st.call(model, example_input)
    finally:
        model.train(was_training)


@contextmanager
def hooked(modules: Iterable[nn.Module], hook: Callable[..., Any], *, pre: bool = False) -> Iterator[None]:
    """`hook` as a forward hook (`pre`: a forward pre-hook) on each of `modules` for the
    length of the with-block; removed afterwards, also on error."""
    handles = []
    try:
        for m in modules:
            handles.append(m.register_forward_pre_hook(hook) if pre else m.register_forward_hook(hook))
        yield
    finally:
        for h in handles:
            h.remove()


def layer_calls(model: nn.Module, example_input: Any, *, accept: Callable[[nn.Module], bool] = lambda m: isinstance(m, LAYERS)) -> list[nn.Module]:
    """Every call of an accepted module during one forward pass, in order (a module
    called twice appears twice)."""
    calls: list[nn.Module] = []
    with hooked((m for m in model.modules() if accept(m)), lambda mod, i, o: calls.append(mod)):
        run_once(model, example_input)
    return calls


def execution_order(model: nn.Module, example_input: Any, **kw) -> list[nn.Module]:
    """Accepted modules (default: Conv/Linear) in the order they first run."""
    return list({id(m): m for m in layer_calls(model, example_input, **kw)}.values())


def set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    """Put `new` at qualified `name` (nested modules, Sequential/ModuleList indices and
    ModuleDict keys are all plain child names)."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


@contextmanager
def swapped(model: nn.Module, name: str, new: nn.Module) -> Iterator[None]:
    """`new` at `name` for the length of the with-block, the original put back afterwards."""
    original = model.get_submodule(name)
    set_submodule(model, name, new)
    try:
        yield
    finally:
        set_submodule(model, name, original)


def changed_forward_error(model: nn.Module, example_input: Any, change: Callable[[nn.Module], Any]) -> Optional[str]:
    """None when a copy of `model` changed in place by `change(copy)` still runs (eval and
    train mode), else what failed, in one line: the change itself (the dependency graph, a
    refused request) or the model's own forward. `model` is not changed."""
    import copy

    from autocompress.errors import one_line

    trial = copy.deepcopy(model)
    try:
        change(trial)
    except Exception as exc:  # noqa: BLE001 - the change does not apply to this model
        return one_line(exc)
    return forward_error(trial, example_input)


def forward_error(model: nn.Module, example_input: Any) -> Optional[str]:
    """None when `model` runs on `example_input` in eval and in train mode (no gradients),
    else the error in one line. Train mode updates BatchNorm statistics: call it on a copy."""
    from autocompress.errors import one_line

    try:
        with torch.no_grad():
            for training in (False, True):
                model.train(training)
                st.call(model, example_input)
    except Exception as exc:  # noqa: BLE001 - the model's own code failed
        return one_line(exc)
    return None
