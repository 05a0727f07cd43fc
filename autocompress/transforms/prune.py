"""Structured channel pruning through Torch-Pruning's dependency graph: whole channels are
removed from coupled layers together (residual adds, depthwise convs, concatenations), so
the pruned model is physically smaller. The classifier's outputs are never pruned.

Ratios are global or one per segment: the prunable groups, ordered by where they first
produce output in a forward pass, split into contiguous segments (autocompress.segments).

Criteria:
  l1, l2     magnitude of the group's weights (Torch-Pruning's group magnitude importance);
  act_mean   mean |activation| each channel feeds into the layers that consume it;
  act_zero   share of non-zero values each channel feeds into its consumers (after a
             ReLU, 1 - the fraction of zeros).
Activation statistics are accumulated over every calibration batch (Torch-Pruning 1.6's
ActivationImportance keeps only the last batch), from the inputs of the consuming
Conv/Linear layers, i.e. the activations after BN, ReLU, pooling and residual adds.

Attention: the query/key/value projections of an attention module (found by structure,
`attention_projections`) keep their output channels: the module splits them into heads of
a size it holds as a number, so removing channels there breaks its reshape (a model from a
library computes `view(batch, seq, heads, head_size)`); whole heads are the `heads`
technique's. The inner width of a transformer's feed-forward blocks (`mlp_inner`) is the
`mlp` technique's. Their input channels, the residual width, are pruned as anywhere else:
on a transformer, channel pruning is residual-width pruning.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional, Sequence

import torch
from torch import nn

from autocompress.data import structure as st
from autocompress.transforms import TransformContext
from autocompress.transforms.graph import _quiet_graph, attention_projections, dependency_graph
from autocompress.transforms.order import LAYERS as _LAYERS
from autocompress.transforms.order import execution_order, hooked, layer_calls
from autocompress.names import PRUNE_CRITERIA
from autocompress.segments import per_item

if TYPE_CHECKING:
    from autocompress.techniques.prune import PruneConfig

CRITERIA = PRUNE_CRITERIA
__all__ = ["CRITERIA", "ActivationImportance", "attention_projections", "dependency_graph", "execution_order", "output_layers", "prunable_groups", "prune_channels"]


def output_layers(model: nn.Module, example_input: torch.Tensor) -> list[nn.Module]:
    """The last Conv/Linear to run: the layer whose outputs are the model's outputs
    (pruning it would change the number of classes)."""
    return layer_calls(model, example_input)[-1:]


def excluded_modules(model: nn.Module, names: Sequence[str]) -> list[nn.Module]:
    """The modules named in `names` and everything inside them; unknown names raise."""
    named = dict(model.named_modules())
    out: list[nn.Module] = []
    for name in names:
        if name not in named:
            raise ValueError(f"prune.exclude names {name!r}, which is not a module of the model")
        out.extend(named[name].modules())
    return out


class ActivationImportance:
    """Channel importance from activation statistics accumulated over calibration batches.

    For every Conv/Linear input channel c: mean |x_c| ('act_mean') or the share of
    non-zero x_c ('act_zero'), over all batches and positions. A group's score per channel
    is the mean over the group's consuming layers; a group no layer consumes (none here,
    but possible in odd graphs) falls back to L1 weight magnitude."""

    def __init__(self, model: nn.Module, batches: Sequence[Any], *, mode: str):
        import torch_pruning as tp

        if mode not in ("act_mean", "act_zero"):
            raise ValueError(f"mode must be 'act_mean' or 'act_zero', got {mode!r}")
        self._tp = tp
        self._fallback = tp.importance.GroupMagnitudeImportance(p=1)
        self.stats: dict[nn.Module, torch.Tensor] = {}
        sums: dict[nn.Module, torch.Tensor] = {}
        counts: dict[nn.Module, int] = {}

        @torch.no_grad()
        def hook(mod, inputs, output):
            x = inputs[0]
            if isinstance(mod, nn.Linear):
                x = x.reshape(-1, x.shape[-1])
            else:
                x = x.transpose(0, 1).reshape(x.shape[1], -1).T  # (positions, channels)
            v = x.abs() if mode == "act_mean" else (x != 0).float()
            sums[mod] = sums.get(mod, 0) + v.sum(0)
            counts[mod] = counts.get(mod, 0) + v.shape[0]

        was_training = model.training
        try:
            model.eval()
            with hooked((m for m in model.modules() if isinstance(m, _LAYERS)), hook), torch.no_grad():
                for b in batches:
                    st.call(model, b)
        finally:
            model.train(was_training)
        self.stats = {m: sums[m] / counts[m] for m in sums}

    @torch.no_grad()
    def __call__(self, group) -> torch.Tensor:
        fn = self._tp.pruner.function
        acc: Optional[torch.Tensor] = None
        n = 0
        for i, (dep, idxs) in enumerate(group):
            layer, handler = dep.layer, dep.pruning_fn
            root_idxs = group[i].root_idxs
            if handler not in (fn.prune_conv_in_channels, fn.prune_linear_in_channels) or layer not in self.stats:
                continue
            if any(r is None for r in root_idxs):
                continue
            stat = self.stats[layer]
            if isinstance(layer, nn.modules.conv._ConvNd) and layer.groups > 1 and stat.numel() != layer.in_channels:
                continue
            local = stat[torch.as_tensor(idxs)]
            if acc is None:
                acc = torch.zeros(len(group[0].idxs), dtype=torch.float32)
            acc.scatter_add_(0, torch.as_tensor(root_idxs), local.float())
            n += 1
        if acc is None:
            return self._fallback(group)
        return acc / n


def _importance(model: nn.Module, cfg: PruneConfig, ctx: TransformContext):
    import torch_pruning as tp

    if cfg.criterion in ("l1", "l2"):
        return tp.importance.GroupMagnitudeImportance(p=1 if cfg.criterion == "l1" else 2)
    if cfg.criterion in ("act_mean", "act_zero"):
        data = ctx.calibration if ctx.calibration is not None else ctx.example_input
        batches = [st.take(data, slice(i, i + ctx.batch_size)) for i in range(0, st.rows(data), ctx.batch_size)]
        return ActivationImportance(model, batches, mode=cfg.criterion)
    raise ValueError(f"prune.criterion must be one of {list(CRITERIA)}, got {cfg.criterion!r}")


def prunable_groups(model: nn.Module, example_input: torch.Tensor, ignored: Sequence[nn.Module]) -> list[list[nn.Module]]:
    """Each prunable group as the Conv/Linear layers whose output channels it removes,
    ordered by where the group first produces output in a forward pass."""
    import torch_pruning as tp

    dg = dependency_graph(model, example_input)
    position = {id(m): i for i, m in enumerate(execution_order(model, example_input))}
    groups = []
    for group in dg.get_all_groups(ignored_layers=list(ignored), root_module_types=[nn.modules.conv._ConvNd, nn.Linear]):
        outs = []
        for dep, _ in group:
            m = dep.target.module
            if isinstance(m, _LAYERS) and dg.is_out_channel_pruning_fn(dep.handler) and m not in outs:
                outs.append(m)
        if outs:
            groups.append(outs)
    groups.sort(key=lambda g: min(position.get(id(m), len(position)) for m in g))
    return groups


def mlp_inner(model: nn.Module, example_input: Any) -> list[nn.Module]:
    """The inner Linear of each feed-forward block in a repeated stack (transforms.mlp): its
    width is the `mlp` technique's, so channel pruning leaves its outputs alone (its inputs,
    the residual width, are pruned as anywhere else)."""
    from autocompress.transforms.mlp import mlp_sites

    return [model.get_submodule(s.path) for s in mlp_sites(model, example_input)]


def prune_channels(model: nn.Module, cfg: PruneConfig, ctx: TransformContext) -> nn.Module:
    """Remove channels from every prunable group at the group's ratio, ranked by the
    criterion. `model` is the caller's own copy; pruned in place."""
    if not cfg.active:
        return model
    import torch_pruning as tp

    model.eval()
    example = ctx.example_input
    ignored = [*output_layers(model, example), *excluded_modules(model, cfg.exclude), *attention_projections(model), *mlp_inner(model, example)]
    ratio_dict = None
    if cfg.segment_ratios is not None:
        ratio_dict = {}
        for layers, ratio in per_item(prunable_groups(model, example, ignored), cfg.segment_ratios):
            for layer in layers:
                ratio_dict[layer] = ratio
    with _quiet_graph():
        pruner = tp.pruner.MetaPruner(
            model,
            example,
            importance=_importance(model, cfg, ctx),
            pruning_ratio=cfg.ratio if cfg.segment_ratios is None else 0.0,
            pruning_ratio_dict=ratio_dict,
            ignored_layers=ignored,
            round_to=cfg.round_to,
            global_pruning=False,
        )
    pruner.step()
    return model
