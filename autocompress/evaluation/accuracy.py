"""Accuracy measured on the ONNX file itself: what is deployed is what is measured."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

_DEFAULT_THREADS = 0  # ORT's default: every core


def set_default_threads(threads: int) -> None:
    """Threads of the accuracy sessions when a call does not say (0 = ORT's default). A
    process that shares the machine with other trials sets its share of the cores."""
    global _DEFAULT_THREADS
    _DEFAULT_THREADS = int(threads)


def onnx_predict(path: str | Path, x: np.ndarray, *, batch: int = 256, threads: Optional[int] = None,
                 providers: tuple[str, ...] = ("CPUExecutionProvider",)) -> np.ndarray:
    """Predicted class per row of `x`, by ONNX Runtime (threads 0 = ORT default, None = the
    process's default, set_default_threads; by default on the CPU, or on a hardware
    profile's execution providers)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = _DEFAULT_THREADS if threads is None else threads
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(path), sess_options=so, providers=list(providers))
    name = sess.get_inputs()[0].name
    x = np.ascontiguousarray(x, dtype=np.float32)
    preds = [sess.run(None, {name: x[i : i + batch]})[0].argmax(axis=1) for i in range(0, len(x), batch)]
    return np.concatenate(preds) if preds else np.zeros(0, dtype=np.int64)


def onnx_accuracy(path: str | Path, x: np.ndarray, y: np.ndarray, **kw) -> float:
    """Top-1 accuracy (fraction) of the ONNX model at `path` on (x, y)."""
    y = np.asarray(y)
    if len(y) == 0:
        raise ValueError("cannot measure accuracy on an empty split")
    return float((onnx_predict(path, x, **kw) == y).mean())
