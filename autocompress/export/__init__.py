"""Export: PyTorch model -> ONNX file, and ONNX Runtime's static quantization."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from autocompress.export.onnx import export_onnx, model_size_bytes
from autocompress.export.quantize import QuantizeReport, quantizable_nodes, quantize_int8, quantize_onnx


@dataclass(frozen=True)
class GraphContext:
    """What a "graph" technique may need besides the file it changes: calibration inputs,
    one sample's input shape, and the path it writes (`dst`)."""

    calibration: np.ndarray
    input_shape: tuple[int, ...]
    dst: Path


__all__ = ["GraphContext", "QuantizeReport", "export_onnx", "model_size_bytes", "quantizable_nodes", "quantize_int8", "quantize_onnx"]
