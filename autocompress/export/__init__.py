"""Export: PyTorch model -> ONNX file, and ONNX Runtime's static quantization."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from typing import Any, Optional

from autocompress.export.onnx import export_onnx, model_size_bytes
from autocompress.export.quantize import QuantizeReport, quantizable_nodes, quantize_int8, quantize_onnx


@dataclass(frozen=True)
class GraphContext:
    """What a "graph" technique may need besides the file it changes: calibration inputs (a
    feed: input name -> samples, or one float array), one sample's input shape (None when
    the model takes several inputs), and the path it writes (`dst`)."""

    calibration: Any
    input_shape: Optional[tuple[int, ...]]
    dst: Path


__all__ = ["GraphContext", "QuantizeReport", "export_onnx", "model_size_bytes", "quantizable_nodes", "quantize_int8", "quantize_onnx"]
