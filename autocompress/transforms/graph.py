"""What the structural transforms share: Torch-Pruning's dependency graph of a model, and
the attention modules' query/key/value projections found by structure."""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from typing import Any, Iterator

from torch import nn

__all__ = ["FUSED_QKV", "QKV_NAMES", "attention_projections", "dependency_graph"]


QKV_NAMES = (("query", "key", "value"), ("q", "k", "v"), ("q_proj", "k_proj", "v_proj"), ("q_lin", "k_lin", "v_lin"),
             ("wq", "wk", "wv"), ("to_q", "to_k", "to_v"))
FUSED_QKV = {"qkv", "wqkv", "query_key_value"}  # lower-cased names of a fused q/k/v Linear


def attention_projections(model: nn.Module) -> list[nn.Module]:
    """The query/key/value Linear layers of the model's attention modules: a module's
    direct Linear children named as one of QKV_NAMES' triples (BERT's query/key/value,
    q_proj/k_proj/v_proj, DistilBERT's q_lin/...), and fused projections named in
    FUSED_QKV (a ViT's qkv). Found by structure, not by class name. (GPT-2's Conv1D
    c_attn and nn.MultiheadAttention's in_proj_weight are not Linear children: not found.)"""
    out: list[nn.Module] = []
    for module in model.modules():
        linear = {name.lower(): child for name, child in module.named_children() if isinstance(child, nn.Linear)}
        for triple in QKV_NAMES:
            if all(n in linear for n in triple):
                out.extend(linear[n] for n in triple)
        out.extend(child for name, child in linear.items() if name in FUSED_QKV)
    return out


@contextmanager
def _quiet_graph() -> Iterator[None]:
    """Torch-Pruning's warning about parameters outside a layer (a ViT's class token and
    position embeddings, pruned along their last axis with the width they belong to) is
    not shown."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Unwrapped parameters detected")
        yield


def dependency_graph(model: nn.Module, example_input: Any):
    """Torch-Pruning's dependency graph of `model` traced on `example_input` (a tuple is
    called as model(*x), a dict as model(**x))."""
    import torch_pruning as tp

    with _quiet_graph():
        return tp.DependencyGraph().build_dependency(model, example_inputs=example_input)
