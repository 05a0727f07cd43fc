"""Export: PyTorch model -> ONNX file, and ONNX Runtime's static int8 quantization."""

from autocompress.export.onnx import export_onnx, model_size_bytes
from autocompress.export.quantize import quantize_int8

__all__ = ["export_onnx", "model_size_bytes", "quantize_int8"]
