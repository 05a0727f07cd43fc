"""Block substitution inside any model: find the blocks that can be replaced, and replace
them with blocks from the library (transforms.blocks) at the shapes they must produce.

`targets: auto` rule (find_targets): the repeated units of the network, what a person
would replace. A module is a target when, in one forward pass on an example batch, it
  * takes one 4-D tensor and returns one 4-D tensor,
  * contains at least one convolution and has sub-modules (a bare conv, BN or ReLU is not
    a block),
  * is not a pure container (Sequential / ModuleList / ModuleDict: we look inside them),
  * is called exactly once,
  * is repeated: a sibling under the same parent is of its class and passes the tests
    above (so a stem, a head or a final 1x1 conv, each one of a kind, is never a target),
  * is not a container of blocks: no Sequential / ModuleList inside it holds two such
    units of one class (a stage of blocks is looked into, its blocks are the targets),
  * and does not lie inside another module that passes the first four tests, other than a
    container of blocks (the outermost such module wins: the convs inside a stem are not
    targets either).
In a ResNet that gives layer1.0, layer1.1, ... (the residual blocks), not every conv; in
Hugging Face's MobileNetV2 the inverted residuals, not the stem or the last 1x1 conv; in
its ConvNeXt the layers of each stage, not the patchify stem or the stages.

A block whose replacement breaks the model's own forward (its parent reads attributes of
the block it had, or calls it with extra arguments) is found by `breaking_choices` (the
model run with each replacement, on a copy) and kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional, Sequence

import torch
from torch import nn

from autocompress.transforms import TransformContext
from autocompress.transforms.order import forward_error, hooked, run_once, set_submodule, swapped

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


def _unit(name: str, mod: nn.Module, seen: dict[str, dict[str, Any]]) -> bool:
    """The first four tests of the `auto` rule (module docstring)."""
    if name not in seen or isinstance(mod, _CONTAINERS) or not any(True for _ in mod.children()):
        return False
    if seen[name]["calls"] != 1 or not any(isinstance(m, nn.modules.conv._ConvNd) for m in mod.modules()):
        return False
    return _target(name, seen[name]) is not None


def find_targets(model: nn.Module, example_input: Any) -> list[Target]:
    """Replaceable blocks by the `auto` rule (module docstring), in model order."""
    seen = _record(model, example_input)
    units = {name for name, mod in model.named_modules() if name and _unit(name, mod, seen)}
    modules = dict(model.named_modules())

    def parent(name: str) -> str:
        return name.rpartition(".")[0]

    def repeated(name: str) -> bool:
        return any(o != name and parent(o) == parent(name) and type(modules[o]) is type(modules[name]) for o in units)

    def stack(name: str) -> bool:  # a container holding two units of one class
        kinds = [type(modules[u]) for u in units if parent(u) == name and repeated(u)]
        return isinstance(modules[name], _CONTAINERS) and len(kinds) > len(set(kinds))

    stacks = [n for n in modules if n and stack(n)]
    out: list[Target] = []
    claimed: list[str] = []  # targets, and the one-of-a-kind units (stems, heads) whose insides are theirs
    for name in modules:
        if name not in units or any(name.startswith(c + ".") for c in claimed):
            continue
        if any(s.startswith(name + ".") for s in stacks):  # a container of blocks: its blocks are the targets
            continue
        claimed.append(name)
        if repeated(name):
            out.append(_target(name, seen[name]))  # type: ignore[arg-type]
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


def breaking_choices(model: nn.Module, example_input: Any, targets: Sequence[Target], choices: Sequence[str]) -> dict[tuple[str, str], str]:
    """{(target, block): why} for the replacements that break the model's forward, each
    tried alone on a copy of the model, in eval and in train mode."""
    import copy

    from autocompress.transforms.blocks import check_block, make_block

    probe = copy.deepcopy(model)
    out = {}
    for t in targets:
        for block in choices:
            if block == "keep" or check_block(block, t.cin, t.cout, t.stride) is not None:
                continue
            with swapped(probe, t.name, make_block(block, t.cin, t.cout, t.stride)):
                why = forward_error(probe, example_input)
            if why is not None:
                out[(t.name, block)] = why
    return out


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
        set_submodule(model, path, new)
    return model
