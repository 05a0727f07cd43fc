"""Evaluation on the exported artifact: the metric and latency, both with ONNX Runtime."""

from autocompress.evaluation.accuracy import onnx_accuracy, onnx_outputs, onnx_predict, split_accuracy, split_metric
from autocompress.evaluation.latency import (
    CachedLatency,
    DeviceMeter,
    LatencyMeter,
    LatencyResult,
    LatencyWorker,
    measure_interleaved,
    summarize_interleaved,
)

__all__ = ["CachedLatency", "DeviceMeter", "LatencyMeter", "LatencyResult", "LatencyWorker", "measure_interleaved", "onnx_accuracy", "onnx_outputs", "onnx_predict",
           "split_accuracy", "split_metric", "summarize_interleaved"]
