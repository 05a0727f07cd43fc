"""Attention-head pruning: whole heads leave an attention module, through Torch-Pruning's
dependency graph.

Attention modules are found by structure, not by class name: a module whose direct Linear
children are a query/key/value triple (BERT's query/key/value, q_proj/k_proj/v_proj, ...,
`graph.QKV_NAMES`) of equal widths, whose head count or head size it holds as a number
(`num_attention_heads`, `num_heads`, `n_heads`, `n_head`; or `attention_head_size`,
`head_dim`, `head_size`). Fused q/k/v projections (one `qkv` Linear) and
`nn.MultiheadAttention` are not pruned here (the heads technique first splits the latter
into a `transforms.mha.SplitMultiheadAttention`, which is found here).

Removing head h means removing channels [h*d, (h+1)*d) of the query, key and value
outputs and the same input channels of the layer that consumes the attention output (BERT's
`attention.output.dense`, an `o_proj`, wherever it is): Torch-Pruning's dependency graph
couples those layers (the attention's matmuls and reshapes are traced), so one pruning
group removes them together, and its group magnitude (L1 over the q/k/v rows and the
output layer's columns) ranks the heads. The graph never rewrites the module's own head
count: `prune_heads` does (every count attribute the module holds, and `all_head_size` /
`inner_dim`), so a module that reshapes by its head count still fits; the head size is
unchanged. Torch-Pruning is called with fresh arguments every time (its pruners mutate
default arguments across calls)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

import torch
from torch import nn

from autocompress.transforms.graph import QKV_NAMES, dependency_graph

__all__ = ["AttentionSite", "attention_sites", "head_scores", "prune_heads", "heads_to_remove"]

COUNT_ATTRS = ("num_attention_heads", "num_heads", "n_heads", "n_head")
SIZE_ATTRS = ("attention_head_size", "head_dim", "head_size")
WIDTH_ATTRS = ("all_head_size", "inner_dim")  # heads x head size, where a module keeps it


@dataclass(frozen=True)
class AttentionSite:
    """One attention module: its path, the names of its q/k/v Linear children, its head
    count and head size."""

    path: str
    qkv: tuple[str, str, str]
    heads: int
    head_size: int


def _site(path: str, module: nn.Module) -> Optional[AttentionSite]:
    linear = {name.lower(): (name, child) for name, child in module.named_children() if isinstance(child, nn.Linear)}
    for triple in QKV_NAMES:
        if not all(n in linear for n in triple):
            continue
        names = tuple(linear[n][0] for n in triple)
        widths = {linear[n][1].out_features for n in triple}
        if len(widths) != 1:  # grouped-query attention (fewer key/value heads): not pruned here
            return None
        width = widths.pop()
        heads = next((int(getattr(module, a)) for a in COUNT_ATTRS if isinstance(getattr(module, a, None), int)), None)
        size = next((int(getattr(module, a)) for a in SIZE_ATTRS if isinstance(getattr(module, a, None), int)), None)
        if heads is None and size:
            heads = width // size
        if not heads or width % heads or (size is not None and size * heads != width):
            return None
        return AttentionSite(path, names, heads, width // heads)  # type: ignore[arg-type]
    return None


def attention_sites(model: nn.Module) -> list[AttentionSite]:
    """Every attention module whose heads can be pruned, in module order."""
    out = []
    for path, module in model.named_modules():
        site = _site(path, module)
        if site is not None:
            out.append(site)
    return out


def heads_to_remove(heads: int, ratio: float) -> int:
    """How many of `heads` heads a ratio removes: ratio x heads rounded half up, at least one kept."""
    return min(heads - 1, max(0, int(ratio * heads + 0.5)))


def _group(dg: Any, query: nn.Linear, channels: Sequence[int]):
    import torch_pruning as tp

    return dg.get_pruning_group(query, tp.prune_linear_out_channels, idxs=list(channels))


def head_scores(dg: Any, model: nn.Module, site: AttentionSite) -> torch.Tensor:
    """One score per head: the L1 magnitude of its channels over the pruning group (q/k/v
    rows and biases, the output layer's columns)."""
    import torch_pruning as tp

    module = model.get_submodule(site.path)
    query = getattr(module, site.qkv[0])
    group = _group(dg, query, range(query.out_features))
    imp = tp.importance.GroupMagnitudeImportance(p=1, group_reduction="sum", normalizer=None)(group)
    return imp.reshape(site.heads, site.head_size).sum(dim=1)


def _rewrite_counts(module: nn.Module, heads: int, head_size: int) -> None:
    for attr in COUNT_ATTRS:
        if isinstance(getattr(module, attr, None), int):
            setattr(module, attr, heads)
    for attr in WIDTH_ATTRS:
        if isinstance(getattr(module, attr, None), int):
            setattr(module, attr, heads * head_size)


def prune_heads(model: nn.Module, example_input: Any, remove: Mapping[str, int]) -> dict[str, int]:
    """Remove `remove[path]` heads (the lowest-scoring) from each attention module at
    `path`, in place; {path: heads left}. ValueError for a path that is not an attention
    site of the model or a count that would leave no head."""
    sites = {s.path: s for s in attention_sites(model)}
    unknown = [p for p in remove if p not in sites]
    if unknown:
        raise ValueError(f"{unknown[0]!r} is not an attention module with prunable heads; found: {sorted(sites)}")
    left = {}
    wanted = {p: int(n) for p, n in remove.items() if int(n) > 0}
    for path, n in wanted.items():
        if n >= sites[path].heads:
            raise ValueError(f"{path!r} has {sites[path].heads} heads; cannot remove {n}")
    if not wanted:
        return {p: sites[p].heads for p in remove}
    was_training = model.training
    model.eval()
    try:
        dg = dependency_graph(model, example_input)
        for path, n in wanted.items():
            site = sites[path]
            module = model.get_submodule(path)
            query = getattr(module, site.qkv[0])
            order = torch.argsort(head_scores(dg, model, site))[:n].tolist()  # the n weakest heads
            channels = sorted(c for h in order for c in range(h * site.head_size, (h + 1) * site.head_size))
            group = _group(dg, query, channels)
            touched = {dep.target.module for dep, _ in group}
            missing = [name for name in site.qkv if getattr(module, name) not in touched]
            if missing:  # the graph did not couple q, k and v: the heads would not line up
                raise ValueError(f"{path}: Torch-Pruning's graph does not couple {list(site.qkv)} (missing {missing})")
            group.prune()
            _rewrite_counts(module, site.heads - n, site.head_size)
            left[path] = site.heads - n
    finally:
        model.train(was_training)
    return {p: left.get(p, sites[p].heads) for p in remove}
