"""ONNX Runtime's transformer optimizer on an exported file (`fuse_onnx`): the Python
fusions of `onnxruntime.transformers.optimizer.optimize_model` for BERT-like encoders
(model_type 'bert'; 'vit' runs the same fusions) write the attention subgraph of each
layer as one com.microsoft `Attention` node, the MLP's bias + GELU as `BiasGelu`, and,
with `layer_norm`, residual Add + LayerNormalization as `SkipLayerNormalization` and the
embeddings as `EmbedLayerNormalization`.

opt_level 0: only the Python fusions run; ONNX Runtime's own graph optimizations are not
baked into the file (level 1 would run them in an ORT session first and save the result:
constant folding and node eliminations that any session repeats when it loads the file,
the file then declaring nine operator domains, ai.onnx.training and com.microsoft.nchwc
among them). The same fusions were found at both levels on our BERT and ViT exports. So the
file holds the standard ONNX operators of the export plus the com.microsoft operators that
the fusions add, each of which ONNX Runtime's CPU execution provider implements (and the
CUDA one): it needs ONNX Runtime (`FuseReport.ort_only`), on any execution provider.

What fuses (ORT 1.32, transformers 5.x, TorchScript export at opset 17):
  * Attention needs the attention exported in "eager" form (export.onnx exports Hugging
    Face models with eager attention; their default SDPA form fuses no Attention) and,
    because a Hugging Face model reshapes to (batch, sequence, -1, head size), the head
    count given: with num_heads=0 ORT cannot read it from the graph and fuses no Attention.
    (ORT reads the count per layer where the graph states it, a reshape to a constant head
    count; the models we tried fuse no Attention that way, TinyEncoder none at all.)
  * num_heads > 0 is applied to every layer whose graph does not state its own count: a
    model whose layers have different head counts must be fused with num_heads=0 (the
    caller's choice, see techniques.fuse), which fuses Attention only where the graph
    states the count, i.e. only where it is right. A wrong count fuses and runs, silently
    wrong (tests/export/test_fuse.py).
  * A Hugging Face ViT fuses no Attention even so (ORT's attention patterns do not match
    its graph); BiasGelu (and with layer_norm SkipLayerNormalization) still fuse.

`layer_norm`: on ORT 1.32's CPU execution provider the SkipLayerNormalization kernel took
3.7x to 7x the time of the Add + LayerNormalization it replaces (hidden 128, sequence 64:
46 us against 12.5 us; hidden 768, sequence 128: 489 against 68 us; AMD EPYC, one thread),
so a fully fused BERT ran slower than the unfused file, while Attention and BiasGelu alone
made it faster (numbers in techniques.fuse). `layer_norm=False` leaves out the embedding
fusion too: with EmbedLayerNormalization in the graph, ORT's session optimizer turns the
layers' Add + LayerNormalization into SkipLayerNormalization by itself. For the same
reason the file's value_info holds types and no shapes (`_with_types`).

Outputs: the fused file gives the unfused file's outputs within 1e-4 (absolute, on logits
up to 4): measured max differences 0 with Attention and BiasGelu alone (BERT, ViT,
TinyEncoder, random weights drawn with std 0.3) and up to 1.3e-5 with the layer-norm
fusions, whose kernels sum in another order. The input file is never changed.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from autocompress.export.quantize import MS_DOMAIN, _OtherThreads, _quiet_ort

MODEL_TYPES = ("bert", "vit")  # ORT optimizer model types whose fusions suit an encoder (both run BertOnnxModel's)
LAYER_NORM_FUSIONS = ("enable_skip_layer_norm", "enable_bias_skip_layer_norm", "enable_embed_layer_norm")
FUSED_OPS_OF_ORT = ("Attention", "MultiHeadAttention", "EmbedLayerNormalization", "SkipLayerNormalization", "BiasGelu", "FastGelu",
                    "Gelu", "GemmFastGelu", "SkipSimplifiedLayerNormalization", "SimplifiedLayerNormalization", "RotaryEmbedding")


@dataclass(frozen=True)
class FuseReport:
    """What `fuse_onnx` wrote: the file, ORT's fused-operator statistics (every operator it
    counts, zeros included; its 'LayerNormalization' counts the standard operator, fused or
    exported as one), whether the file needs ONNX Runtime (com.microsoft operators), and
    the head count and hidden size the optimizer was given (0: read from the graph)."""

    path: Path
    fused: dict[str, int] = field(default_factory=dict)
    ort_only: bool = False
    num_heads: int = 0
    hidden_size: int = 0
    layer_norm: bool = True

    @property
    def ops(self) -> dict[str, int]:
        """The fused operators actually written ({name: count}, non-zero only)."""
        return {k: v for k, v in self.fused.items() if v and k in FUSED_OPS_OF_ORT}

    def describe(self) -> str:
        """'Attention 4, BiasGelu 4' (or 'nothing fused')."""
        return ", ".join(f"{k} {v}" for k, v in sorted(self.ops.items())) or "nothing fused"


def _optimizer_loggers() -> list[logging.Logger]:
    """The loggers of ONNX Runtime's Python tools (the transformer optimizer, the symbolic
    shape inference). The optimizer's modules import one another as top-level modules
    ('fusion_attention', 'onnx_model_bert', ...: its package puts its folder on sys.path),
    so their loggers are found by where their module's file lies."""
    import onnxruntime

    folder = Path(onnxruntime.__file__).resolve().parent
    out = []
    for name, lg in list(logging.root.manager.loggerDict.items()):
        if not isinstance(lg, logging.Logger):
            continue
        where = getattr(sys.modules.get(name), "__file__", None)
        if name.startswith("onnxruntime") or (where and Path(where).resolve().is_relative_to(folder)):
            out.append(lg)
    return out


@contextlib.contextmanager
def _quiet_optimizer() -> Iterator[None]:
    """`_quiet_ort` (the root logger's records and stdout of this thread), and the same
    filter on the optimizer's own loggers: its warnings ('Failed to detect num_heads ...',
    '--num_heads is 4. Detected value is 2.') are records of those loggers, which a filter
    on the root logger does not see. Other threads' records pass; nothing is left behind."""
    only = _OtherThreads(threading.get_ident())
    loggers = _optimizer_loggers()
    for lg in loggers:
        lg.addFilter(only)
    try:
        with _quiet_ort():
            yield
    finally:
        for lg in loggers:
            lg.removeFilter(only)


def fuse_onnx(src: str | Path, dst: str | Path, *, num_heads: int, hidden_size: int, model_type: str = "bert",
              layer_norm: bool = True, attention: bool = True) -> FuseReport:
    """Write `src` fused by ONNX Runtime's transformer optimizer to `dst` (`src` is not
    changed). num_heads / hidden_size: the model's attention head count and the width of
    its attention (heads x head size), both 0 to let ORT read them from the graph only where
    the graph states them (see the module docstring). layer_norm: also fuse residual
    Add + LayerNormalization and the embeddings; attention: fuse Attention at all."""
    import onnx
    from onnxruntime.tools import symbolic_shape_infer  # noqa: F401 - imported before its logger is quietened
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    if model_type not in MODEL_TYPES:
        raise ValueError(f"model_type must be one of {MODEL_TYPES}, got {model_type!r}")
    if num_heads < 0 or hidden_size < 0 or (num_heads > 0) != (hidden_size > 0) or (num_heads and hidden_size % num_heads):
        raise ValueError(f"num_heads and hidden_size must both be 0 or both positive with hidden_size a multiple of num_heads; "
                         f"got {num_heads} and {hidden_size}")
    src, dst = Path(src), Path(dst)
    if src.resolve() == dst.resolve():
        raise ValueError(f"fuse_onnx writes a new file; dst is src ({src})")
    options = FusionOptions(model_type)
    options.enable_attention = attention
    if not layer_norm:
        for name in LAYER_NORM_FUSIONS:
            setattr(options, name, False)
    dst.parent.mkdir(parents=True, exist_ok=True)
    with _quiet_optimizer():
        optimizer = optimize_model(str(src), model_type=model_type, num_heads=num_heads, hidden_size=hidden_size,
                                   optimization_options=options, opt_level=0, use_gpu=False)
        stats = {k: int(v) for k, v in optimizer.get_fused_operator_statistics().items()}
        optimizer.topological_sort()
        proto = optimizer.model
        ort_only = any(n.domain == MS_DOMAIN for n in proto.graph.node)
        if ort_only and not any(o.domain == MS_DOMAIN for o in proto.opset_import):
            proto.opset_import.append(onnx.helper.make_opsetid(MS_DOMAIN, 1))  # what ORT's own save adds
        proto = _with_types(proto)
        onnx.save(proto, str(dst))
    return FuseReport(dst, stats, ort_only, num_heads, hidden_size, layer_norm)


def _with_types(proto):
    """The graph with every tensor's element type written in (value_info), from ORT's
    symbolic shape inference, which knows the com.microsoft operators: ONNX's own shape
    inference does not, so the tensors after the first fused node would have no type, and
    ORT's static quantizer calibrates only tensors it knows to be float (without this a
    fused file fails to quantize: 'Unable to get valid quantization scale'). Types only,
    shapes left out: with the shapes, ORT's session optimizer (level 'extended' and up)
    itself fuses each residual Add + LayerNormalization into SkipLayerNormalization, the
    kernel `layer_norm=False` is there to avoid (measured on the BERT of techniques.fuse,
    Attention + BiasGelu fused: 1.57 ms with shapes, 1.30 ms without, 1.40 ms unfused). A
    graph the inference cannot follow is written as it is."""
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    try:
        typed = SymbolicShapeInference.infer_shapes(proto, auto_merge=True)
    except Exception:  # noqa: BLE001 - the fused file is still right, only less described
        return proto
    for vi in typed.graph.value_info:
        if vi.type.HasField("tensor_type"):
            vi.type.tensor_type.ClearField("shape")
    return typed


__all__ = ["FuseReport", "fuse_onnx"]
