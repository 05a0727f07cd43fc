"""MLP-width pruning: the inner (intermediate) width of each feed-forward block of a
repeated stack, through Torch-Pruning's dependency graph.

A feed-forward block is found by structure: inside a layer of a repeated stack
(transforms.layers.layer_stacks: a transformer's `encoder.layer`), a Linear (fc1, BERT's
`intermediate.dense`) whose output channels couple, in the dependency graph, with nothing
but input channels of other Linear layers (fc2, through an activation): no residual add,
no normalization, no other layer's outputs. The residual width (coupled across the whole
stack) and the attention's q/k/v widths (its heads, transforms.heads) are not inner widths,
and neither is anything outside a stack (a pooler, a classifier). Channels are ranked by
the group's L1 magnitude (fc1's rows and bias, fc2's columns) and the weakest removed from
fc1 and fc2 together; the model's own code holds no number for the inner width, so nothing
else is rewritten."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional

import torch
from torch import nn

from autocompress.transforms.layers import layer_stacks
from autocompress.transforms.graph import attention_projections, dependency_graph

__all__ = ["MlpSite", "mlp_sites", "prune_mlp", "width_kept"]


@dataclass(frozen=True)
class MlpSite:
    """One feed-forward block: the path of its inner Linear (fc1) and its width."""

    path: str
    width: int


def width_kept(width: int, ratio: float, round_to: Optional[int] = None) -> int:
    """Channels a ratio keeps of `width`: round((1 - ratio) * width), rounded to a multiple
    of `round_to` (when the width allows one), at least one."""
    kept = max(1, int(round((1.0 - ratio) * width)))
    if round_to and round_to > 1 and width >= round_to:
        kept = max(round_to, int(round(kept / round_to)) * round_to)
    return min(width, kept)


def _inner(dg: Any, model: nn.Module, layer: nn.Linear) -> bool:
    import torch_pruning as tp

    own = {id(m) for m in model.modules()}
    if layer not in dg.module2node:  # not called as a module (a parent reads its weight): not prunable through the graph
        return False
    group = dg.get_pruning_group(layer, tp.prune_linear_out_channels, idxs=list(range(layer.out_features)))
    consumers = 0
    for dep, _ in group:
        target = dep.target.module
        if id(target) not in own:  # Torch-Pruning's own nodes for functions (activations, reshapes)
            continue
        if target is layer:
            continue
        if isinstance(target, nn.Linear) and dep.handler == tp.prune_linear_in_channels:
            consumers += 1
            continue
        return False
    return consumers > 0


def mlp_sites(model: nn.Module, example_input: Any) -> list[MlpSite]:
    """The inner Linear of every feed-forward block inside the layers of the model's
    outermost repeated stacks, in module order."""
    stacks = layer_stacks(model)
    stacks = [s for s in stacks if not any(s.path.startswith(o.path + ".") for o in stacks)]
    if not stacks:
        return []
    qkv = {id(m) for m in attention_projections(model)}
    was_training = model.training
    model.eval()
    try:
        dg = dependency_graph(model, example_input)
        out = []
        for stack in stacks:
            prefix = f"{stack.path}." if stack.path else ""
            for path, module in model.named_modules():
                if not path.startswith(prefix) or not isinstance(module, nn.Linear) or id(module) in qkv:
                    continue
                if module.out_features > 1 and _inner(dg, model, module):
                    out.append(MlpSite(path, module.out_features))
    finally:
        model.train(was_training)
    return out


def prune_mlp(model: nn.Module, example_input: Any, keep: Mapping[str, int]) -> dict[str, int]:
    """Keep `keep[path]` channels (the strongest by L1 group magnitude) of the inner Linear
    at each `path` and of the layers that consume it, in place; {path: width left}."""
    import torch_pruning as tp

    layers = {path: model.get_submodule(path) for path in keep}
    for path, layer in layers.items():
        if not isinstance(layer, nn.Linear):
            raise ValueError(f"{path!r} is not a Linear layer of the model")
        if not 1 <= int(keep[path]) <= layer.out_features:
            raise ValueError(f"{path!r} has {layer.out_features} channels; cannot keep {keep[path]}")
    todo = {p: int(k) for p, k in keep.items() if int(k) < layers[p].out_features}
    if todo:
        was_training = model.training
        model.eval()
        try:
            dg = dependency_graph(model, example_input)
            imp = tp.importance.GroupMagnitudeImportance(p=1, group_reduction="sum", normalizer=None)
            for path, k in todo.items():
                layer = layers[path]
                group = dg.get_pruning_group(layer, tp.prune_linear_out_channels, idxs=list(range(layer.out_features)))
                weakest = torch.argsort(imp(group))[: layer.out_features - k].tolist()
                dg.get_pruning_group(layer, tp.prune_linear_out_channels, idxs=sorted(weakest)).prune()
        finally:
            model.train(was_training)
    return {p: layers[p].out_features for p in keep}
