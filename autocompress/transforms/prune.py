"""Structured channel pruning through Torch-Pruning's dependency graph: whole channels are
removed from coupled layers together (residual adds, depthwise convs, concatenations), so
the pruned model is physically smaller. The classifier's outputs are never pruned."""

from __future__ import annotations

import torch
from torch import nn

from autocompress.config import PruneConfig
from autocompress.transforms import TransformContext, register_transform


def output_layers(model: nn.Module, example_input: torch.Tensor) -> list[nn.Module]:
    """The last Linear/Conv executed in a forward pass: the layer whose outputs are the
    model's outputs (pruning it would change the number of classes)."""
    order: list[nn.Module] = []
    hooks = [
        m.register_forward_hook(lambda mod, i, o: order.append(mod))
        for m in model.modules()
        if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))
    ]
    try:
        with torch.no_grad():
            model.eval()(example_input)
    finally:
        for h in hooks:
            h.remove()
    return order[-1:]


@register_transform(PruneConfig)
def prune_channels(model: nn.Module, cfg: PruneConfig, ctx: TransformContext) -> nn.Module:
    """Remove `cfg.ratio` of the channels of every prunable group, ranked by L1 norm.
    `model` is the caller's copy (apply_transform copies); it is pruned in place."""
    if cfg.ratio <= 0:
        return model
    import torch_pruning as tp

    model.eval()
    pruner = tp.pruner.MetaPruner(
        model,
        ctx.example_input,
        importance=tp.importance.MagnitudeImportance(p=1),
        pruning_ratio=cfg.ratio,
        ignored_layers=output_layers(model, ctx.example_input),
        global_pruning=False,
    )
    pruner.step()
    return model
