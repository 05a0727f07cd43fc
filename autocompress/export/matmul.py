"""Quantization of the MatMul nodes of transformer graphs with ONNX Runtime's tools: no
calibration, no training data, nothing but the exported file.

What is quantized: a *weight MatMul*, a MatMul node whose second input is a 2-D weight
initializer (`weight_matmuls`). A torch Linear applied to an input of more than 2
dimensions (a transformer's (batch, tokens, features) hidden states) exports as one: the
attention's query/key/value/output projections and the MLP's two layers. Left float:

  * the activation x activation MatMuls of attention (Q K^T, and the attention weights times
    V): both operands change with every input, there is no weight to store smaller, and
    their precision is what the softmax sees (`activation_matmuls`);
  * Gemm nodes: a Linear on a 2-D input (a classifier head, BERT's pooler). ORT's dynamic
    quantizer (1.32) rewrites *every* Gemm as MatMul + Add before it quantizes and would then
    quantize that MatMul too; `quantize_matmul_dynamic` names the nodes it quantizes, so a
    Gemm stays float (written as MatMul + Add with its weight transposed, which ORT's graph
    optimizer fuses back into a Gemm when the session starts). MatMulNBits quantization
    does not touch Gemm at all. Measured: quantizing them too (ORT's default) multiplies
    the logits' max error by 5 on a BERT (hidden 128, 4 layers, pooler and classifier
    Gemm: 8.2e-4 against 1.6e-4, max |logit| 0.07) and by 1.5 on TinyEncoder (head: 0.0097
    against 0.0066, max |logit| 0.76), for no measurable speed (1 thread, batch 8: 6.45
    against 6.54 ms); and a model whose Linear layers are all Gemm (a CNN's classifier) is
    not what this technique is for;
  * embeddings (Gather): never quantized here (MatMulNBitsQuantizer can write
    GatherBlockQuantized, but a Gather costs no arithmetic, and ORT's own note says a
    dequantized Gather uses the same memory at run time).

`quantize_matmul_dynamic`: int8 dynamic quantization (`quantize_dynamic`): int8 weights
(symmetric QInt8, per tensor unless `per_channel`), and uint8 activations quantized at run
time per tensor (DynamicQuantizeLinear -> MatMulInteger -> scale; ORT fuses these into one
kernel when the session starts). QInt8 weights, not QUInt8: on an AMD EPYC with AVX-512
VNNI a BERT (hidden 128, 4 layers, sequence 64, batch 1, 1 thread) ran in 0.94 ms with
QInt8 weights and 1.36 ms with QUInt8 (fp32: 1.47 ms); ORT's u8s8 kernels are its fast path.
`reduce_range` quantizes weights to 7 bits: ORT's advice for AVX2/AVX-512 CPUs without
VNNI, whose u8s8 multiply-add can saturate; costs precision where VNNI is there. The file
uses only standard ONNX operators (MatMulInteger, DynamicQuantizeLinear): not ORT-only.

`quantize_matmul_int4`: 4-bit weight-only (MatMulNBitsQuantizer, QOperator format):
symmetric int4 weights in blocks of `block_size` (32, 64 or 128) input rows per output
column, one float scale per block, run by ORT's MatMulNBits ('com.microsoft', so the file
needs ONNX Runtime: ort_only). `accuracy_level` 0: the kernel's default compute type
(float activations); 4: activations quantized to int8 in the kernel (faster where ORT has
an int8 kernel for it, slightly less precise). What it buys is size: on the BERT above
(sequence 64) 3.85 -> 1.20 MB at block 32 (embeddings stay float), at 0.9-1.0x the float
latency; at sequence 1 accuracy level 4 ran 1.14-1.21x faster than float, level 0 not. Weights whose input dimension K is smaller
than the block size are left float (`skipped` says so): ORT would pad them with zeros to
one whole block (exact, but a 16-row weight in a 128-block is stored as 128 rows, no
smaller than in float, and computed as 128). A K that is larger than the block but not a
multiple of it is quantized: ORT pads the last block with zero rows (exact; at most one
block per column more).

Masks: dynamic quantization calibrates nothing (an activation's range is taken per run),
and int4 is weight-only, so the -inf constants of transformers 5.x's attention masks
(through Where) pass through untouched and unquantized; checked on a Hugging Face BERT
with padded inputs (tests/export/test_matmul.py).

Both functions read `src` and write `dst` (never the input file), quietly (ORT's
quantizer advice and logging silenced in the calling thread, `_quiet_ort`), and return a
`MatMulQuantReport`.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from autocompress.export.quantize import MS_DOMAIN, _OtherThreads, _quiet_ort

METHODS = ("dynamic", "int4_wo")
BLOCK_SIZES = (32, 64, 128)
ACCURACY_LEVELS = (0, 4)
_NBITS_MODULE = "onnxruntime.quantization.matmul_nbits_quantizer"
_QUANT_OPS = {"dynamic": "MatMulInteger", "int4_wo": "MatMulNBits"}


@dataclass(frozen=True)
class MatMulQuantReport:
    """What a MatMul quantization wrote. `quantized`: the names of the input graph's weight
    MatMul nodes now quantized, in graph order; `skipped`: weight MatMuls left float, with
    why; ort_only: the written graph holds a 'com.microsoft' node (MatMulNBits), so only
    ONNX Runtime runs it."""

    path: Path
    method: str
    quantized: tuple[str, ...]
    skipped: dict[str, str] = field(default_factory=dict)
    ort_only: bool = False


def _weights(graph) -> dict:
    return {t.name: t for t in graph.initializer}


def weight_matmuls(model_or_path) -> list[str]:
    """Names of the MatMul nodes whose second input is a 2-D weight initializer, in graph order."""
    graph = _load(model_or_path).graph
    weights = _weights(graph)
    return [n.name for n in graph.node
            if n.op_type == "MatMul" and n.domain in ("", "ai.onnx") and n.input[1] in weights and len(weights[n.input[1]].dims) == 2]


def activation_matmuls(model_or_path) -> list[str]:
    """Names of the MatMul nodes of two activations (attention's Q K^T and weights x V)."""
    graph = _load(model_or_path).graph
    weights = _weights(graph)
    return [n.name for n in graph.node if n.op_type == "MatMul" and not any(i in weights for i in n.input[:2])]


def _load(model_or_path):
    import onnx

    return onnx.load(str(model_or_path), load_external_data=False) if isinstance(model_or_path, (str, Path)) else model_or_path


def _outputs(model, names: list[str]) -> dict[str, str]:
    return {n.name: n.output[0] for n in model.graph.node if n.name in names}


def _named(model) -> bool:
    """Give every unnamed MatMul node a unique name (the quantizers select nodes by name);
    whether any was renamed."""
    taken = {n.name for n in model.graph.node}
    renamed = False
    for i, node in enumerate(model.graph.node):
        if node.op_type == "MatMul" and not node.name:
            name = f"MatMul_{i}"
            while name in taken:
                name += "_"
            node.name = name
            taken.add(name)
            renamed = True
    return renamed


@contextlib.contextmanager
def _quiet_nbits() -> Iterator[None]:
    """`_quiet_ort`, and the MatMulNBits quantizer's own logger filtered in this thread.

    Importing that module calls `logging.basicConfig(level=INFO)`: on a process whose root
    logger has no handler it would add one and lower the root level to INFO for good (every
    library's INFO messages printed from then on). The import is done here with the root
    logger's handlers and level put back as they were."""
    root = logging.getLogger()
    if _NBITS_MODULE not in sys.modules:
        handlers, level = list(root.handlers), root.level
        try:
            import onnxruntime.quantization.matmul_nbits_quantizer  # noqa: F401
        finally:
            for h in root.handlers[:]:
                if h not in handlers:
                    root.removeHandler(h)
            root.setLevel(level)
    import threading

    nbits_logger = logging.getLogger(_NBITS_MODULE)
    only = _OtherThreads(threading.get_ident())
    nbits_logger.addFilter(only)
    try:
        with _quiet_ort():
            yield
    finally:
        nbits_logger.removeFilter(only)


def _finish(dst: Path, method: str, chosen: list[str], outputs: dict[str, str], skipped: dict[str, str]) -> MatMulQuantReport:
    """Check the written graph: each chosen node (`outputs`: its output tensor) replaced by
    the method's operator (no float MatMul writes its output any more), and report."""
    out = _load(dst)
    still_float = {n.output[0] for n in out.graph.node if n.op_type == "MatMul"}
    left = [name for name in chosen if outputs[name] in still_float]
    count = sum(1 for n in out.graph.node if n.op_type == _QUANT_OPS[method])
    if left or count != len(chosen):
        raise RuntimeError(f"ORT did not quantize {left or chosen} as asked ({count} {_QUANT_OPS[method]} nodes for {len(chosen)} MatMuls)")
    return MatMulQuantReport(dst, method, tuple(chosen), skipped, ort_only=any(n.domain == MS_DOMAIN for n in out.graph.node))


def _copy(src: Path, dst: Path, method: str, skipped: dict[str, str]) -> MatMulQuantReport:
    import shutil

    if src.resolve() != dst.resolve():
        shutil.copyfile(src, dst)
    return MatMulQuantReport(dst, method, (), skipped, ort_only=any(n.domain == MS_DOMAIN for n in _load(dst).graph.node))


def quantize_matmul_dynamic(src: str | Path, dst: str | Path, *, reduce_range: bool = False, per_channel: bool = False,
                            weight_type: str = "int8") -> MatMulQuantReport:
    """int8 dynamic quantization of the weight MatMuls of `src` into `dst` (see the module
    docstring: activation x activation MatMuls, Gemm and Gather stay float). `weight_type`
    'int8' (QInt8, ORT's fast u8s8 path) or 'uint8'. A graph without a weight MatMul is copied."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    if weight_type not in ("int8", "uint8"):
        raise ValueError(f"weight_type must be 'int8' or 'uint8', got {weight_type!r}")
    src, dst = Path(src), Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    model = _load(src)
    renamed = _named(model)
    chosen = weight_matmuls(model)
    if not chosen:
        return _copy(src, dst, "dynamic", {})
    with _quiet_ort(), tempfile.TemporaryDirectory(prefix="autocompress-matmul-") as tmp:
        path = src
        if renamed:
            path = Path(tmp) / "named.onnx"
            onnx.save(model, str(path))
        quantize_dynamic(
            str(path),
            str(dst),
            op_types_to_quantize=["MatMul"],
            nodes_to_quantize=chosen,  # weight MatMuls only: not the MatMul a Gemm becomes
            per_channel=per_channel,
            reduce_range=reduce_range,
            weight_type=QuantType.QInt8 if weight_type == "int8" else QuantType.QUInt8,
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT, "MatMulConstBOnly": True},
        )
    return _finish(dst, "dynamic", chosen, _outputs(model, chosen), {})


def quantize_matmul_int4(src: str | Path, dst: str | Path, *, block_size: int = 32, accuracy_level: int = 0) -> MatMulQuantReport:
    """4-bit symmetric weight-only quantization of the weight MatMuls of `src` into `dst`
    (MatMulNBits, blocks of `block_size` input rows); weights with fewer input rows than a
    block stay float (`skipped`). A graph with nothing to quantize is copied."""
    import onnx

    if block_size not in BLOCK_SIZES:
        raise ValueError(f"block_size must be one of {BLOCK_SIZES}, got {block_size!r}")
    if accuracy_level not in ACCURACY_LEVELS:
        raise ValueError(f"accuracy_level must be one of {ACCURACY_LEVELS}, got {accuracy_level!r}")
    src, dst = Path(src), Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    model = _load(src)
    _named(model)
    weights = _weights(model.graph)
    nodes = {n.name: n for n in model.graph.node}
    chosen, skipped = [], {}
    for name in weight_matmuls(model):
        k = weights[nodes[name].input[1]].dims[0]
        if k < block_size:
            skipped[name] = f"input dimension {k} is smaller than the block size {block_size}"
        else:
            chosen.append(name)
    if not chosen:
        return _copy(src, dst, "int4_wo", skipped)
    outputs = _outputs(model, chosen)
    with _quiet_nbits():
        from onnxruntime.quantization import QuantFormat
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

        quantizer = MatMulNBitsQuantizer(
            model,  # a copy of the file's graph: the quantizer changes it in place
            bits=4,
            block_size=block_size,
            is_symmetric=True,
            accuracy_level=accuracy_level,
            nodes_to_exclude=[n.name for n in model.graph.node if n.op_type == "MatMul" and n.name not in chosen],
            quant_format=QuantFormat.QOperator,
            op_types_to_quantize=("MatMul",),
        )
        quantizer.process()
        quantizer.model.save_model_to_file(str(dst), False)
    return _finish(dst, "int4_wo", chosen, outputs, skipped)


__all__ = ["ACCURACY_LEVELS", "BLOCK_SIZES", "METHODS", "MatMulQuantReport", "activation_matmuls", "quantize_matmul_dynamic",
           "quantize_matmul_int4", "weight_matmuls"]
