"""Export: PyTorch model -> ONNX file, and ONNX Runtime's static quantization."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from typing import Any, Optional

from autocompress.export.fuse import FuseReport, fuse_onnx
from autocompress.export.onnx import export_onnx, model_size_bytes
from autocompress.export.quantize import QuantizeReport, quantizable_nodes, quantize_int8, quantize_onnx


@dataclass(frozen=True)
class GraphContext:
    """What a "graph" technique may need besides the file it changes: calibration inputs (a
    feed: input name -> samples, or one float array), one sample's input shape (None when
    the model takes several inputs), and the path it writes (`dst`). `model`: the torch
    model the file was exported from (None where the caller has none: a technique that
    reads it must work without it); `record`: trial attributes the technique reports
    ({name: a number or a short string}; pipeline.evaluate_candidate stores them on the
    trial, e.g. fuse's fused_ops)."""

    calibration: Any
    input_shape: Optional[tuple[int, ...]]
    dst: Path
    model: Any = None
    record: dict[str, Any] = field(default_factory=dict)


__all__ = ["FuseReport", "GraphContext", "QuantizeReport", "export_onnx", "fuse_onnx", "model_size_bytes", "quantizable_nodes", "quantize_int8", "quantize_onnx"]
