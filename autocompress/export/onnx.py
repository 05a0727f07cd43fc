"""ONNX export with the TorchScript exporter (dynamo=False), deliberately: it writes one
self-contained file with a dynamic batch axis, folds BatchNorm into convolutions in eval
mode and takes ~0.1 s for our models, where the dynamo exporter takes seconds and writes
weights to a side file. Size always counts every byte the model needs, side files too."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "logits"


def export_onnx(model: nn.Module, input_shape: tuple[int, ...], path: str | Path) -> Path:
    """Write `model` (in eval mode, on CPU) to `path` with a dynamic batch axis."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    example = torch.zeros(1, *input_shape)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                (example,),
                str(path),
                dynamo=False,
                opset_version=OPSET,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
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
