"""ONNX export with the TorchScript exporter (dynamo=False), deliberately: it writes one
self-contained file with a dynamic batch axis, folds BatchNorm into convolutions in eval
mode and takes ~0.1 s for our models, where the dynamo exporter takes seconds and writes
weights to a side file. Size always counts every byte the model needs, side files too."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from autocompress.data import structure as st
from autocompress.data.structure import INPUT_NAME, OUTPUT_NAME

OPSET = 17


def export_onnx(model: nn.Module, example, path: str | Path, *, dynamic_axes: Optional[dict[str, dict[int, str]]] = None) -> Path:
    """Write `model` (in eval mode, on CPU) to `path`, traced on `example`: the task's example
    inputs (a tensor, tuple or dict, data.structure), or one sample's shape (a zero tensor of
    it). Inputs and outputs are named as data.structure names them, each with a dynamic batch
    axis; `dynamic_axes` adds axes by input name (e.g. {"input_ids": {1: "sequence"}})."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    if isinstance(example, tuple) and all(isinstance(i, int) for i in example):
        example = torch.zeros(1, *example)
    try:
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
    finally:
        model.train(was_training)
    _unshare_biases(path)
    return path


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
