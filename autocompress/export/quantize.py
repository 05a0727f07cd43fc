"""Static int8 quantization with ONNX Runtime's tools: per-channel int8 weights, int8 or
uint8 activations, QDQ or QOperator format, MinMax calibration on training samples.

On CPUs without VNNI the format decides whether int8 pays at all (QOperator with uint8
activations was fastest where we measured, QDQ int8 was slower than fp32), so both are
search choices and the result is always measured."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np


class _ArrayReader:
    """CalibrationDataReader over one array, fed in batches."""

    def __init__(self, input_name: str, x: np.ndarray, batch: int = 64):
        self._batches = [{input_name: x[i : i + batch]} for i in range(0, len(x), batch)]
        self._it = iter(self._batches)

    def get_next(self):
        return next(self._it, None)

    def rewind(self):
        self._it = iter(self._batches)


def quantize_int8(
    fp32_path: str | Path,
    out_path: str | Path,
    calibration: np.ndarray,
    *,
    activations: str = "uint8",
    fmt: str = "qoperator",
) -> Path:
    """Quantize `fp32_path` to `out_path`; `calibration` is a float32 input batch array."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if activations not in ("int8", "uint8"):
        raise ValueError(f"activations must be 'int8' or 'uint8', got {activations!r}")
    if fmt not in ("qdq", "qoperator"):
        raise ValueError(f"fmt must be 'qdq' or 'qoperator', got {fmt!r}")
    import onnx

    input_name = onnx.load(str(fp32_path), load_external_data=False).graph.input[0].name
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # ORT's quantizer gives advice on the root logger
    try:
        quantize_static(
            str(fp32_path),
            str(out_path),
            _ArrayReader(input_name, np.ascontiguousarray(calibration, dtype=np.float32)),
            quant_format=QuantFormat.QOperator if fmt == "qoperator" else QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8 if activations == "uint8" else QuantType.QInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
    finally:
        root.setLevel(level)
    return out_path
