"""Block substitution inside any model: find the blocks that can be replaced, and replace
them with blocks from the library (transforms.blocks) at the shapes they must produce.

`targets: auto` rule (find_targets): a module is a target when, in one forward pass on an
example batch, it
  * takes one 4-D tensor and returns one 4-D tensor,
  * contains at least one convolution and has sub-modules (a bare conv, BN or ReLU is not
    a block),
  * is not a pure container (Sequential / ModuleList / ModuleDict: we look inside them),
  * is called exactly once,
  * and does not lie inside another target (the outermost such module wins).
In a ResNet that gives layer1.0, layer1.1, ... (the residual blocks), not every conv.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional, Sequence

import torch
from torch import nn

from autocompress.transforms import TransformContext
from autocompress.transforms.order import hooked, run_once

if TYPE_CHECKING:
    from autocompress.techniques.blocks import BlockConfig

_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


@dataclass(frozen=True)
class Target:
    """A replaceable block and the shapes a replacement must keep."""

    name: str
    cin: int
    cout: int
    stride: int
    in_hw: tuple[int, int]
    out_hw: tuple[int, int]


def _record(model: nn.Module, example_input: Any) -> dict[str, dict[str, Any]]:
    """Per module name: call count and the shapes of its (single-tensor) input/output."""
    names = {id(m): n for n, m in model.named_modules()}
    seen: dict[str, dict[str, Any]] = {}

    def hook(mod, inputs, output):
        rec = seen.setdefault(names[id(mod)], {"calls": 0})
        rec["calls"] += 1
        one_in = len(inputs) == 1 and isinstance(inputs[0], torch.Tensor)
        rec["in"] = tuple(inputs[0].shape) if one_in else None
        rec["out"] = tuple(output.shape) if isinstance(output, torch.Tensor) else None

    with hooked((m for m in model.modules() if m is not model), hook):
        run_once(model, example_input)
    return seen


def _target(name: str, rec: dict[str, Any]) -> Optional[Target]:
    i, o = rec.get("in"), rec.get("out")
    if i is None or o is None or len(i) != 4 or len(o) != 4:
        return None
    (h, w), (oh, ow) = i[2:], o[2:]
    if oh == 0 or ow == 0 or h % oh or w % ow or h // oh != w // ow:
        return None
    return Target(name, i[1], o[1], h // oh, (h, w), (oh, ow))


def find_targets(model: nn.Module, example_input: Any) -> list[Target]:
    """Replaceable blocks by the `auto` rule (module docstring), in model order."""
    seen = _record(model, example_input)
    out: list[Target] = []
    for name, mod in model.named_modules():
        if not name or name not in seen or any(name.startswith(t.name + ".") for t in out):
            continue
        if isinstance(mod, _CONTAINERS) or not any(True for _ in mod.children()):
            continue
        if seen[name]["calls"] != 1 or not any(isinstance(m, nn.modules.conv._ConvNd) for m in mod.modules()):
            continue
        target = _target(name, seen[name])
        if target is not None:
            out.append(target)
    return out


def describe_targets(model: nn.Module, example_input: Any, names: Sequence[str]) -> list[Target]:
    """Named targets (from `blocks.targets`), with their shapes; unknown or unusable names
    raise ValueError naming the module."""
    modules = dict(model.named_modules())
    seen = _record(model, example_input)
    out = []
    for name in names:
        if name not in modules:
            raise ValueError(f"blocks.targets names {name!r}, which is not a module of the model")
        rec = seen.get(name)
        if rec is None or rec["calls"] != 1:
            raise ValueError(f"blocks.targets: {name!r} must run exactly once per forward pass, ran {0 if rec is None else rec['calls']} times")
        target = _target(name, rec)
        if target is None:
            raise ValueError(f"blocks.targets: {name!r} must take and return one 4-D tensor (N, C, H, W)")
        out.append(target)
    return out


def _set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def substitute_blocks(model: nn.Module, cfg: BlockConfig, ctx: TransformContext) -> nn.Module:
    """Replace each (path, block) of `cfg` other than 'keep' with a fresh library block of
    the same input/output shape. `model` is the caller's copy; changed in place."""
    if not cfg.active:
        return model
    from autocompress.transforms.blocks import make_block

    wanted = [(p, b) for p, b in cfg.choices if b != "keep"]
    targets = {t.name: t for t in describe_targets(model, ctx.example_input, [p for p, _ in wanted])}
    for path, block in wanted:
        t = targets[path]
        new = make_block(block, t.cin, t.cout, t.stride)
        param = next(model.get_submodule(path).parameters(), None)
        if param is not None:
            new = new.to(device=param.device, dtype=param.dtype)
        _set_submodule(model, path, new)
    return model
