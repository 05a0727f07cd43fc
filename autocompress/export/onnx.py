"""ONNX export with the TorchScript exporter (dynamo=False), deliberately: it writes one
self-contained file with a dynamic batch axis, folds BatchNorm into convolutions in eval
mode and takes ~0.1 s for our models, where the dynamo exporter takes seconds and writes
weights to a side file. Size always counts every byte the model needs, side files too.

Hugging Face models are exported with eager attention (`eager_attention`), the teacher and
every candidate alike: ONNX Runtime's transformer optimizer (export.fuse) fuses the eager
form into one Attention node per layer and the SDPA form (transformers 5.x's default) not
at all. Unfused, the eager export gave the SDPA export's outputs within 2e-7 and was a
little faster (a BERT of hidden 128, 4 layers, sequence 64, ORT CPU, 1 thread: 1.38-1.42 ms
eager, 1.46-1.50 ms SDPA, three runs; the SDPA graph has more nodes, its NaN guards), so
every export is eager and the teacher's baseline is timed on the same form as the
candidates. Fine-tuning in torch keeps the model's own setting: only the export is eager."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from autocompress.data import structure as st
from autocompress.data.structure import INPUT_NAME, OUTPUT_NAME

OPSET = 17


def export_onnx(model: nn.Module, example, path: str | Path, *, dynamic_axes: Optional[dict[str, dict[int, str]]] = None) -> Path:
    """Write `model` (in eval mode, on CPU) to `path`, traced on `example`: the task's example
    inputs (a tensor, tuple or dict, data.structure), or one sample's shape (a zero tensor of
    it). Inputs and outputs are named as data.structure names them, each with a dynamic batch
    axis; `dynamic_axes` adds axes by input name (e.g. {"input_ids": {1: "sequence"}}).
    torch's nn.MultiheadAttention is exported in its split form (transforms.mha: the same
    outputs): nn.TransformerEncoder's fused fast path, which an eval-mode trace takes, has no
    ONNX export, and the split form is what head pruning and low rank change."""
    from autocompress.transforms.mha import split_attention

    model = split_attention(model)  # the model itself when it has no nn.MultiheadAttention, else a split copy
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    if isinstance(example, tuple) and all(isinstance(i, int) for i in example):
        example = torch.zeros(1, *example)
    try:
        with eager_attention(model):
            _trace(model, example, path, dynamic_axes)
    finally:
        model.train(was_training)
    _unshare_biases(path)
    return path


def _trace(model: nn.Module, example, path: Path, dynamic_axes: Optional[dict[str, dict[int, str]]]) -> None:
    with torch.no_grad():
        out = st.call(model, example)
        out_names = [n for n, _ in st.output_fields(out)]
    plain = isinstance(example, torch.Tensor) and isinstance(out, torch.Tensor)  # traced as it is (names as ever)
    names = st.input_names(example)
    axes = {n: {0: "batch", **(dynamic_axes or {}).get(n, {})} for n in names}
    axes.update({n: {0: "batch"} for n in out_names})
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model if plain else st.Flat(model, example),
            tuple(st.tensors(example)),
            str(path),
            dynamo=False,
            opset_version=OPSET,
            input_names=names,
            output_names=out_names,
            dynamic_axes=axes,
            do_constant_folding=True,
        )


def _setting_attr(cfg: Any) -> str:
    """Where a config keeps its attention setting: a transformers config in
    `_attn_implementation_internal` (behind a property that also sets its sub-configs),
    anything else in `_attn_implementation` itself."""
    return "_attn_implementation_internal" if hasattr(cfg, "_attn_implementation_internal") else "_attn_implementation"


def _attention_configs(configs) -> dict[int, tuple[Any, Any]]:
    """{id: (config, its attention setting)} of `configs` that have an attention setting
    (`_attn_implementation`), and of their sub-configs."""
    found: dict[int, tuple[Any, Any]] = {}
    todo = list(configs)
    while todo:
        cfg = todo.pop()
        if cfg is None or id(cfg) in found or not hasattr(cfg, "_attn_implementation"):
            continue
        found[id(cfg)] = (cfg, getattr(cfg, _setting_attr(cfg)))
        todo += [getattr(cfg, key, None) for key in (getattr(cfg, "sub_configs", None) or {})]
    return found


@contextmanager
def eager_attention(model: nn.Module) -> Iterator[nn.Module]:
    """Within the block, the model's Hugging Face attention runs in its eager form (matmul,
    softmax, matmul: what ONNX Runtime's transformer optimizer fuses); every config's setting
    is restored on exit, also on error. A PreTrainedModel (anything with
    `set_attn_implementation`) is switched through that method, which checks that the model
    can switch and sets its sub-models' configs (one that cannot is left as it is); a config
    that only other modules hold (`module.config._attn_implementation`) is set directly.
    A model without such configs is left alone."""
    saved = _attention_configs(getattr(m, "config", None) for m in model.modules())
    if not saved:
        yield model
        return
    try:
        switchable = [m for m in model.modules() if callable(getattr(m, "set_attn_implementation", None))]
        inner = {id(sub) for m in switchable for sub in m.modules() if sub is not m}
        for m in switchable:
            if id(m) not in inner:  # the outermost ones: each dispatches to what it holds
                m.set_attn_implementation("eager")
        owned = _attention_configs(getattr(m, "config", None) for m in switchable)
        for key, (cfg, _) in saved.items():
            if key not in owned:
                cfg._attn_implementation = "eager"
        yield model
    finally:
        for cfg, value in saved.values():
            setattr(cfg, _setting_attr(cfg), value)


def _unshare_biases(path: Path) -> None:
    """The exporter writes identical constants once and aliases the others through Identity
    nodes; two convolutions whose folded biases are equal (freshly initialised BatchNorms)
    then take their bias from an Identity, which ORT's QOperator quantizer cannot read (it
    looks for an initializer). Give each such bias its own initializer (a few floats); the
    file is rewritten only when there is one."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    graph = proto.graph
    inits = {t.name: t for t in graph.initializer}
    bias_inputs = {n.input[2] for n in graph.node if n.op_type in ("Conv", "Gemm") and len(n.input) > 2}
    outputs = {o.name for o in graph.output}
    aliases = [n for n in graph.node if n.op_type == "Identity" and n.input[0] in inits and n.output[0] in bias_inputs and n.output[0] not in outputs]
    if not aliases:
        return
    for node in aliases:
        copy = onnx.TensorProto()
        copy.CopyFrom(inits[node.input[0]])
        copy.name = node.output[0]
        graph.initializer.append(copy)
        graph.node.remove(node)
    onnx.save(proto, str(path))


def model_size_bytes(path: str | Path) -> int:
    """All bytes of an ONNX model: the file plus any external-data files it references."""
    import onnx

    path = Path(path)
    total = path.stat().st_size
    proto = onnx.load(str(path), load_external_data=False)
    locations = set()
    for tensor in proto.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            for entry in tensor.external_data:
                if entry.key == "location":
                    locations.add(entry.value)
    for loc in locations:
        total += (path.parent / loc).stat().st_size
    return total
