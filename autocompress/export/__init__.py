"""Export: PyTorch model -> ONNX file, and ONNX Runtime's static quantization."""

from autocompress.export.onnx import export_onnx, model_size_bytes
from autocompress.export.quantize import QuantizeReport, quantizable_nodes, quantize_int8, quantize_onnx

__all__ = ["QuantizeReport", "export_onnx", "model_size_bytes", "quantizable_nodes", "quantize_int8", "quantize_onnx"]
