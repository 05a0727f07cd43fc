"""Static quantization with ONNX Runtime's tools.

`quantize_int8`: every layer int8 (per-channel int8 weights, int8 or uint8 activations,
QDQ or QOperator format, MinMax calibration on training samples).

`quantize_onnx`: driven by a `QuantizeConfig`: a weight bit width ('fp32' | 'int8' |
'int4') for every quantizable layer or per segment of layers, and a choice of activation
type, format and calibration method (MinMax, Entropy or Percentile).

On CPUs without VNNI the format decides whether int8 pays at all (QOperator with uint8
activations was fastest where we measured, QDQ int8 was slower than fp32), so both are
search choices and the result is always measured.

4-bit weights: ORT's quantizer writes them as INT4 initializers feeding DequantizeLinear
(QDQ format only). Below opset 21 (our exports use opset 17) the ONNX standard has no 4-bit
Q/DQ, so ORT puts the Q/DQ ops of the whole model in the 'com.microsoft' domain: such a
file needs ONNX Runtime (`QuantizeReport.ort_only`). ORT 1.32 on CPU runs a QInt4 Conv as
DequantizeLinear (4 -> float) followed by a float Conv, its input still going through a
QuantizeLinear -> DequantizeLinear pair (seen in the session-optimized graph, where int8
QDQ becomes QLinearConv): the file is smaller, but expect no speedup over int8 (it can be
slower than fp32).

Masks: a graph whose constants are infinite or near it (transformers 5.x masks attention
scores with a -inf constant through Where) is calibrated and quantized with those constants
at -1000 or 1000 (softmax gives the same zeros), and the nodes those values flow
through (up to an op whose output is bounded, e.g. Softmax) stay in float
(`unbounded_nodes`): a histogram calibrator cannot bin infinity, and an int8 range that
spans 1e38 would leave every other value in it at zero.
"""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING

import numpy as np

from autocompress.segments import bits_per_item

if TYPE_CHECKING:
    from autocompress.techniques.quantize import QuantizeConfig

QUANTIZABLE_OPS = ("Conv", "Gemm", "MatMul")
MS_DOMAIN = "com.microsoft"
# Entropy calibration histogram: bins collected, and the bins of the quantized range.
ENTROPY_BINS = 512
ENTROPY_QUANTIZED_BINS = 128


class _ArrayReader:
    """CalibrationDataReader over a feed (input name -> array of all samples, or one float
    array for a graph with one input), fed in batches; only the graph's own inputs."""

    def __init__(self, input_names: list[str], x, batch: int = 64):
        feed = dict(x) if isinstance(x, dict) else {input_names[0]: np.ascontiguousarray(x, dtype=np.float32)}
        missing = [n for n in input_names if n not in feed]
        if missing:
            raise ValueError(f"calibration data has inputs {list(feed)}; the graph needs {missing[0]!r}")
        n = len(next(iter(feed.values())))
        self._batches = [{k: np.ascontiguousarray(feed[k][i : i + batch]) for k in input_names} for i in range(0, n, batch)]
        self._it = iter(self._batches)

    def get_next(self):
        return next(self._it, None)

    def rewind(self):
        self._it = iter(self._batches)


class _OtherThreads(logging.Filter):
    """Passes every record except those below ERROR logged by thread `ident`."""

    def __init__(self, ident: int):
        super().__init__()
        self._ident = ident

    def filter(self, record: logging.LogRecord) -> bool:
        return record.thread != self._ident or record.levelno >= logging.ERROR


class _OtherThreadsStdout(io.TextIOBase):
    """sys.stdout for the length of one call: writes from thread `ident` are dropped, every
    other thread's go to the stream that was there before."""

    def __init__(self, target, ident: int):
        self._target = target
        self._ident = ident

    def write(self, text: str) -> int:
        return len(text) if threading.get_ident() == self._ident else self._target.write(text)

    def flush(self) -> None:
        self._target.flush()

    def __getattr__(self, name: str):  # encoding, fileno, isatty ... of the real stream
        return getattr(self._target, name)


@contextlib.contextmanager
def _quiet_ort() -> Iterator[None]:
    """Silence ORT's quantizer in this thread while it runs: it gives advice (pre-processing,
    formats) through the root logger's module-level functions and prints the progress of
    histogram calibration. Other threads' logging and printing go on unchanged, and nothing
    outlives the call: no level is changed, and a root logger without handlers gets
    `logging.lastResort` for the call (what an unconfigured root uses anyway), so the
    quantizer's `logging.warning()` does not run `basicConfig()` and leave a handler behind."""
    ident = threading.get_ident()
    root = logging.getLogger()
    only = _OtherThreads(ident)
    borrowed = logging.lastResort if not root.handlers and logging.lastResort is not None else None
    if borrowed is not None:
        root.addHandler(borrowed)
    root.addFilter(only)
    before = sys.stdout
    quiet = _OtherThreadsStdout(before, ident)
    sys.stdout = quiet
    try:
        yield
    finally:
        if sys.stdout is quiet:
            sys.stdout = before
        root.removeFilter(only)
        if borrowed is not None:
            root.removeHandler(borrowed)


def quantize_int8(
    fp32_path: str | Path,
    out_path: str | Path,
    calibration: np.ndarray,
    *,
    activations: str = "uint8",
    fmt: str = "qoperator",
) -> Path:
    """Every layer int8 (per-channel weights), MinMax calibration: the classic recipe.
    `calibration` is a float32 input batch array."""
    if activations not in ("int8", "uint8"):
        raise ValueError(f"activations must be 'int8' or 'uint8', got {activations!r}")
    if fmt not in ("qdq", "qoperator"):
        raise ValueError(f"fmt must be 'qdq' or 'qoperator', got {fmt!r}")
    cfg = SimpleNamespace(mode="int8", activations=activations, format=fmt, calibration="minmax", segment_bits=None)
    return quantize_onnx(fp32_path, out_path, calibration, cfg).path


@dataclass(frozen=True)
class QuantizeReport:
    """What `quantize_onnx` wrote. node_bits: every quantizable node of the fp32 graph
    (graph order) -> its weight bit width. ort_only: some node of the written file is in
    ORT's 'com.microsoft' domain, so only ONNX Runtime runs it: Q/DQ ops with 4-bit
    weights below opset 21, and also QOperator files (ORT writes QGemm and
    QLinearGlobalAveragePool there, even for int8). opset: the default-domain opset of the
    written file."""

    path: Path
    node_bits: dict[str, str]
    ort_only: bool
    opset: int


def quantizable_nodes(path: str | Path) -> list[str]:
    """Names of the Conv, Gemm and MatMul nodes of an ONNX file, in graph (topological) order."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return [n.name for n in graph.node if n.op_type in QUANTIZABLE_OPS]


def _node_bits(names: list[str], cfg: QuantizeConfig) -> dict[str, str]:
    return bits_per_item(names, cfg)


def _weight_axis(node, initializers) -> int:
    """The output-channel axis of a node's weight (input 1), as ORT's QDQ quantizer uses it."""
    if node.op_type == "Conv":
        return 0
    if node.op_type == "Gemm":
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return 0 if trans_b else 1
    return len(initializers[node.input[1]].dims) - 1  # MatMul: [.., in, out]


def _entropy_ranges(fp32_path: Path, reader: _ArrayReader, tmp: Path, cache: Path) -> None:
    """Entropy (KL) calibration with ENTROPY_BINS histogram bins, written as a calibration
    cache that quantize_static then reads instead of calibrating itself.

    Why not let quantize_static calibrate: it does not pass num_bins on, and ORT's
    defaults (128 bins, 128 quantized bins) leave the KL search a single candidate, the
    full range, so 'entropy' would give exactly MinMax's ranges. The search costs about
    num_bins**2 per calibrated tensor in Python. Measured on 128 samples: a 4-layer CNN
    (16x16) takes ~0.7 s at 512 bins (4 s at 2048); a 22-conv residual net (32x32) takes
    8.6 s in all at 512 bins (MinMax 3.2 s), 14 s at 1024, 37 s at 2048. 512 bins (KL
    candidates from max/4 to max) does move the thresholds. The tensors calibrated are
    those quantize_static would calibrate (all op types ORT quantizes)."""
    from onnxruntime.quantization import CalibrationMethod, create_calibrator, save_tensors_data
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    calibrator = create_calibrator(
        fp32_path,
        list(set(QLinearOpsRegistry) | set(QDQRegistry)),
        augmented_model_path=str(tmp / "augmented.onnx"),
        calibrate_method=CalibrationMethod.Entropy,
        extra_options={"num_bins": ENTROPY_BINS, "num_quantized_bins": ENTROPY_QUANTIZED_BINS},
    )
    calibrator.collect_data(reader)
    save_tensors_data(calibrator.compute_data(), cache)


HUGE = 1e30  # a constant at least this large in magnitude (or infinite) marks a mask, not a value to quantize
MASK_VALUE = 1e3  # ... and is set to this, with its sign: exp(-1000) is 0 in float32 as exp(-inf) is, and a histogram
# calibrator can bin a tensor holding only it (2,048 bins around 1e9 are finer than float32 there)
NOT_A_MASK = {"Clip", "Min", "Max"}  # an infinite bound there is not a mask: left as it is
BOUNDED_OPS = {"Softmax", "LogSoftmax", "Sigmoid", "Tanh", "Erf", "IsNaN", "IsInf", "Equal", "Greater", "Less", "GreaterOrEqual",
               "LessOrEqual", "Not", "And", "Or", "Xor", "Shape", "Size", "ArgMax", "ArgMin"}  # their outputs are bounded or not float


def unbounded_nodes(model) -> tuple[bool, list[str]]:
    """Bound a graph's mask constants in place (infinite, or at least HUGE in magnitude: set
    to +-MASK_VALUE; not the bounds of a Clip, Min or Max; not tensors held as external
    data) and return (whether any was, the names of the nodes their values flow into,
    following them until an op in BOUNDED_OPS)."""
    import onnx
    from onnx import numpy_helper

    huge: set[str] = set()
    graph = model.graph
    bounds = {i for n in graph.node if n.op_type in NOT_A_MASK for i in n.input}

    def bound(tensor) -> None:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            return
        a = numpy_helper.to_array(tensor)
        if a.dtype.kind != "f" or not a.size or tensor.name in bounds:
            return
        far = ~np.isfinite(a) | (np.abs(np.nan_to_num(a)) >= HUGE)
        if far.any():
            tensor.CopyFrom(numpy_helper.from_array(np.where(far, np.sign(np.nan_to_num(a)) * MASK_VALUE, a).astype(a.dtype), tensor.name))
            huge.add(tensor.name)

    for t in graph.initializer:
        bound(t)
    out: list[str] = []
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    attr.t.name = node.output[0]
                    bound(attr.t)
            continue
        if any(i in huge for i in node.input):
            if node.name:
                out.append(node.name)
            if node.op_type not in BOUNDED_OPS:
                huge.update(node.output)
    return bool(huge), out


def _opset(model) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def quantize_onnx(
    fp32_path: str | Path,
    out_path: str | Path,
    calibration: np.ndarray,
    cfg: QuantizeConfig,
) -> QuantizeReport:
    """Quantize `fp32_path` to `out_path` as `cfg` says; `calibration` is a feed of input
    name -> samples (or one float32 input batch array; calibration runs on all of it).

    Quantizable nodes are the Conv, Gemm and MatMul nodes in graph order; with
    `cfg.segment_bits` they are split into len(segment_bits) contiguous segments
    (`split_contiguous`) and each node gets its segment's bit width, else every node gets
    `cfg.mode`. 'fp32' nodes are excluded from quantization, and so are the other nodes
    (Relu, MaxPool, Add, ...) that follow an fp32 node before the next quantizable node (or
    precede the first quantizable node when it is fp32): an fp32 segment runs in float.
    If nothing is quantized the file is copied.

    int8 nodes: per-channel symmetric int8 weights. int4 nodes: per-channel symmetric
    QInt4 weights (TensorQuantOverrides on their weight initializers, with the output
    channel axis: 0 for Conv and transposed Gemm weights, the last for MatMul). A
    MatMul of two activations has no weight: in an int4 segment it is quantized with 8-bit
    inputs and node_bits says 'int8' for it. Activations: cfg.activations
    ('uint8' when None). Format: cfg.format; when None, 'qdq' if any node is int4, else
    'qoperator'. int4 needs 'qdq': an explicit 'qoperator' with an int4 node raises
    ValueError. See the module docstring for how ORT runs 4-bit weights.

    Calibration: 'minmax' | 'entropy' | 'percentile': ORT's MinMax, Entropy and
    Percentile calibrators. Percentile runs with ORT's defaults (99.999th percentile of
    |x| on 2048-bin histograms, clipped to the observed min/max). Entropy runs with
    ENTROPY_BINS=512 histogram bins instead of ORT's 128, which would make it identical to
    MinMax (see `_entropy_ranges`); on 128 samples of a small CNN it takes ~1 s."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    activations = cfg.activations or "uint8"
    if activations not in ("int8", "uint8"):
        raise ValueError(f"activations must be 'int8' or 'uint8', got {activations!r}")
    methods = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    if cfg.calibration not in methods:
        raise ValueError(f"calibration must be one of {tuple(methods)}, got {cfg.calibration!r}")

    fp32_path, out_path = Path(fp32_path), Path(out_path)
    model = onnx.load(str(fp32_path), load_external_data=False)
    bounded, masked = unbounded_nodes(model)  # constants bounded in `model`, written below when there are any
    graph = model.graph
    names = [n.name for n in graph.node if n.op_type in QUANTIZABLE_OPS]
    if len(set(names)) != len(names) or any(not n for n in names):
        raise ValueError(f"{fp32_path}: quantizable nodes need unique non-empty names")
    node_bits = _node_bits(names, cfg)
    initializers = {t.name: t for t in graph.initializer}
    for node in graph.node:
        # A MatMul of two activations has no weight to store in 4 bits: its inputs are
        # quantized as activations (8 bits), and node_bits says 'int8' for it.
        if node.op_type in QUANTIZABLE_OPS and node_bits[node.name] == "int4" and node.input[1] not in initializers:
            node_bits[node.name] = "int8"
    any_int4 = any(b == "int4" for b in node_bits.values())
    fmt = cfg.format or ("qdq" if any_int4 else "qoperator")
    if fmt not in ("qdq", "qoperator"):
        raise ValueError(f"format must be 'qdq' or 'qoperator', got {fmt!r}")
    if any_int4 and fmt == "qoperator":
        raise ValueError(
            "int4 weights need the QDQ format: ONNX Runtime's QOperator format has no 4-bit "
            "operators (got format='qoperator' with int4 layers)"
        )

    out_path.parent.mkdir(parents=True, exist_ok=True)
    if all(b == "fp32" for b in node_bits.values()):
        shutil.copyfile(fp32_path, out_path)
        return QuantizeReport(out_path, node_bits, ort_only=False, opset=_opset(model))

    # fp32 nodes, and the non-quantizable nodes that belong with them.
    exclude: list[str] = []
    current = node_bits[names[0]]
    for node in graph.node:
        if node.op_type in QUANTIZABLE_OPS:
            current = node_bits[node.name]
        if current == "fp32" and node.name:
            exclude.append(node.name)
    exclude += [n for n in masked if n not in exclude]

    # 4-bit weight overrides.
    overrides: dict[str, list[dict]] = {}
    weight_bits: dict[str, str] = {}
    for node in graph.node:
        if node.op_type not in QUANTIZABLE_OPS or node_bits[node.name] == "fp32":
            continue
        weight = node.input[1]
        if weight not in initializers:
            continue
        bits = node_bits[node.name]
        if weight_bits.setdefault(weight, bits) != bits:
            raise ValueError(f"weight {weight!r} is shared by nodes of different bit widths")
        if bits == "int4":
            overrides[weight] = [{"quant_type": QuantType.QInt4, "axis": _weight_axis(node, initializers)}]

    extra_options: dict = {}
    if overrides:
        extra_options["TensorQuantOverrides"] = overrides

    reader = _ArrayReader([i.name for i in graph.input if i.name not in initializers], calibration)
    with _quiet_ort(), tempfile.TemporaryDirectory(prefix="autocompress-quant-") as tmp:
        if bounded:  # quantize the graph with its constants bounded
            fp32_path = Path(tmp) / "bounded.onnx"
            onnx.save(model, str(fp32_path))
        cache = None
        if cfg.calibration == "entropy":
            cache = Path(tmp) / "ranges.json"
            _entropy_ranges(fp32_path, reader, Path(tmp), cache)
        quantize_static(
            str(fp32_path),
            str(out_path),
            None if cache else reader,
            quant_format=QuantFormat.QOperator if fmt == "qoperator" else QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8 if activations == "uint8" else QuantType.QInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=exclude,
            calibrate_method=methods[cfg.calibration],
            extra_options=extra_options,
            calibration_cache_path=cache,
        )

    out = onnx.load(str(out_path), load_external_data=False)
    ort_only = any(n.domain == MS_DOMAIN for n in out.graph.node)
    if overrides:  # the 4-bit weights must really be there
        out_types = {t.name: t.data_type for t in out.graph.initializer}
        missing = [w for w in overrides if out_types.get(f"{w}_quantized") != onnx.TensorProto.INT4]
        if missing:
            raise RuntimeError(f"ORT did not write 4-bit weights for {missing}")
    return QuantizeReport(out_path, node_bits, ort_only=ort_only, opset=_opset(out))
